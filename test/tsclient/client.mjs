// The official OPA TypeScript client (@open-policy-agent/opa) against a
// running `acgs serve`, unchanged: single evaluation, default-decision
// evaluation, and batch evaluation through the Enterprise OPA batch API
// (fallback to single requests disabled, so a missing batch API fails).
//
// Environment:
//   ACGS_URL          base URL of the service (required), e.g. http://127.0.0.1:8004
//   ACGS_REQUESTS_DIR directory of the ACGS request fixtures (default ../../testdata/requests)
//   ACGS_TEST_POLICY  when "t", the service also serves package t (t/x raises a
//                     conflict error when input.a and input.b are both true):
//                     the 207 and 500 batch answers are checked too.
//
// Prints one JSON summary on stdout; exits 1 on the first failed check.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { OPAClient } from "@open-policy-agent/opa";
import { BatchServerError } from "@open-policy-agent/opa/sdk/models/errors";

const here = path.dirname(fileURLToPath(import.meta.url));
const baseURL = process.env.ACGS_URL;
if (!baseURL) {
  console.error("ACGS_URL is not set (e.g. http://127.0.0.1:8004)");
  process.exit(2);
}
const requestsDir = process.env.ACGS_REQUESTS_DIR ?? path.join(here, "..", "..", "testdata", "requests");
const sdkVersion = JSON.parse(
  readFileSync(createRequire(import.meta.url).resolve("@open-policy-agent/opa/package.json"), "utf8"),
).version;

const load = (name) => JSON.parse(readFileSync(path.join(requestsDir, `${name}.json`), "utf8"));
const fixtures = Object.fromEntries(
  ["safe", "complex", "dangerous", "low_trust", "data_access"].map((n) => [n, load(n)]),
);
const expectAllow = { safe: true, complex: true, dangerous: false, low_trust: false, data_access: true };

// No retries: a failure must show, not be retried away.
const opa = new OPAClient(baseURL, { sdk: { retryConfig: { strategy: "none" }, timeoutMs: 30000 } });
const path_ = "acgs/main/decision";
const checks = [];
const summary = { sdk: "@open-policy-agent/opa", sdk_version: sdkVersion, url: baseURL, checks, batch_calls: 0 };

async function check(name, fn) {
  try {
    const detail = await fn();
    checks.push({ name, ok: true, ...(detail === undefined ? {} : { detail }) });
  } catch (err) {
    checks.push({ name, ok: false, error: String(err?.stack ?? err) });
    summary.ok = false;
    console.log(JSON.stringify(summary, null, 2));
    process.exit(1);
  }
}

// What a decision must look like, whichever call produced it.
function assertDecision(name, d) {
  assert.equal(typeof d, "object", `${name}: decision is not an object: ${JSON.stringify(d)}`);
  assert.equal(d.allow, expectAllow[name], `${name}: allow=${d.allow}, want ${expectAllow[name]}: ${JSON.stringify(d.reasons)}`);
  assert.equal(d.constitutional_hash, "cdd01ef066bc6cf2", `${name}: constitutional_hash`);
  assert.ok(Array.isArray(d.reasons), `${name}: reasons is not an array`);
  assert.equal(typeof d.compliance_score, "number", `${name}: compliance_score`);
  if (!d.allow && name === "dangerous") {
    assert.match(d.reasons.join(" "), /prohibited/, "dangerous: reason names the prohibition");
  }
}

const single = {};

await check("evaluate: single decisions", async () => {
  for (const [name, input] of Object.entries(fixtures)) {
    const d = await opa.evaluate(path_, input);
    assertDecision(name, d);
    single[name] = d;
  }
  return Object.fromEntries(Object.entries(single).map(([k, d]) => [k, d.allow]));
});

await check("evaluate: fromResult transformation", async () => {
  const allowed = await opa.evaluate(path_, fixtures.safe, { fromResult: (r) => r?.allow === true });
  const denied = await opa.evaluate(path_, fixtures.dangerous, { fromResult: (r) => r?.allow === true });
  assert.equal(allowed, true);
  assert.equal(denied, false);
});

await check("evaluate: boolean rule acgs/main/allow", async () => {
  const allow = await opa.evaluate("acgs/main/allow", fixtures.dangerous);
  assert.equal(allow, false);
  return { dangerous: allow };
});

await check("evaluateDefault: POST / answers the default decision", async () => {
  assert.equal(typeof opa.evaluateDefault, "function", "the SDK has no evaluateDefault");
  const safe = await opa.evaluateDefault(fixtures.safe);
  const dangerous = await opa.evaluateDefault(fixtures.dangerous);
  assertDecision("safe", safe);
  assertDecision("dangerous", dangerous);
  assert.deepEqual(safe, single.safe);
  assert.deepEqual(dangerous, single.dangerous);
  return { safe: safe.allow, dangerous: dangerous.allow };
});

await check("evaluateBatch: fixtures through /v1/batch/data (no fallback)", async () => {
  summary.batch_calls++;
  const res = await opa.evaluateBatch(path_, fixtures, { fallback: false, rejectMixed: true });
  assert.deepEqual(Object.keys(res).sort(), Object.keys(fixtures).sort(), "every id answered once");
  for (const [name, d] of Object.entries(res)) {
    assertDecision(name, d);
    // The batch answer is the single answer (decision objects carry no per-request fields).
    assert.deepEqual(d, single[name], `${name}: batch and single decisions differ`);
  }
  return Object.fromEntries(Object.entries(res).map(([k, d]) => [k, d.allow]));
});

await check("evaluateBatch: 100 distinct inputs keep their ids", async () => {
  const inputs = {};
  for (let i = 0; i < 100; i++) {
    const base = i % 10 === 0 ? fixtures.dangerous : fixtures.safe;
    const input = structuredClone(base);
    input.context = { ...(input.context ?? {}), agent: { ...(input.context?.agent ?? {}), id: `ts-agent-${i}` } };
    inputs[`req-${i}`] = input;
  }
  summary.batch_calls++;
  const res = await opa.evaluateBatch(path_, inputs, { fallback: false, rejectMixed: true, fromResult: (r) => r.allow });
  assert.equal(Object.keys(res).length, 100);
  let allowed = 0;
  for (let i = 0; i < 100; i++) {
    assert.equal(res[`req-${i}`], i % 10 !== 0, `req-${i}`);
    if (res[`req-${i}`]) allowed++;
  }
  return { allowed, denied: 100 - allowed };
});

if (process.env.ACGS_TEST_POLICY === "t") {
  await check("evaluateBatch: 207 mixed results", async () => {
    summary.batch_calls++;
    const res = await opa.evaluateBatch("t/x", { one: { a: true }, two: { b: true }, bad: { a: true, b: true } }, { fallback: false });
    assert.equal(res.one, 1);
    assert.equal(res.two, 2);
    assert.equal(typeof res.bad, "object", `bad: ${JSON.stringify(res.bad)}`);
    assert.equal(res.bad.code, "evaluation_error");
    assert.equal(res.bad.httpStatusCode, "500");
    return { one: res.one, two: res.two, bad: res.bad.code };
  });

  await check("evaluateBatch: 207 rejected with rejectMixed", async () => {
    summary.batch_calls++;
    await assert.rejects(
      opa.evaluateBatch("t/x", { one: { a: true }, bad: { a: true, b: true } }, { fallback: false, rejectMixed: true }),
      (err) => err?.code === "evaluation_error",
    );
  });

  await check("evaluateBatch: 500 when every item fails", async () => {
    summary.batch_calls++;
    let thrown;
    try {
      await opa.evaluateBatch("t/x", { p: { a: true, b: true }, q: { a: true, b: true, c: 1 } }, { fallback: false });
    } catch (err) {
      thrown = err;
    }
    assert.ok(thrown instanceof BatchServerError, `want BatchServerError, got ${thrown}`);
    assert.deepEqual(Object.keys(thrown.responses ?? {}).sort(), ["p", "q"]);
    for (const r of Object.values(thrown.responses)) assert.equal(r.code, "evaluation_error");
    return { responses: Object.keys(thrown.responses).length };
  });
}

summary.ok = true;
console.log(JSON.stringify(summary, null, 2));
