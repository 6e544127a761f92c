// The official TypeScript MCP client (@modelcontextprotocol/sdk) against
// acgs gateway, for the gateway's end-to-end tests: over streamable HTTP,
// or over stdio with the gateway as its child (as a desktop agent runs it).
//
//   node client.mjs URL TOKEN|- '[{"name": "...", "arguments": {...}, "progress": true}, ...]'
//   node client.mjs --stdio '["acgs", "gateway", "--config", "..."]' CALLS
//
// Prints one JSON object: {"tools": [names], "calls": [{"result": ...} or
// {"error": "..."}], "received": [...], "errors": [...]}, calls in their
// order. A call with "progress": true is made with the library's onprogress
// (it then asks for progress under a token of its own); its entry adds "id"
// and "progressToken", as the library sent the request, and "progress", the
// notifications onprogress reported. "received" is what reached the client,
// in the order it arrived: {"progress": params} for each
// notifications/progress, {"response": id} for each answer. "errors" are
// the library's onerror reports (e.g. progress for a token of no call).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, callsJSON] = process.argv.slice(2);
let transport;
if (url === "--stdio") {
  const [command, ...args] = JSON.parse(token);
  transport = new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" });
} else {
  // TOKEN "-": no Authorization header (the gateway's anonymous_agent).
  const headers = token && token !== "-" ? { Authorization: `Bearer ${token}` } : {};
  transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
}

// The library keeps an onmessage set before connect and calls it first,
// as each message arrives; the order of arrival is what the test checks,
// since the library handles a notification a tick later than an answer.
const received = [];
transport.onmessage = (m) => {
  if (m.method === "notifications/progress") received.push({ progress: m.params });
  else if ("id" in m && ("result" in m || "error" in m)) received.push({ response: m.id });
};
// The tools/call request last sent: its id and the progress token the
// library put in its _meta.
let sentCall;
const send = transport.send.bind(transport);
transport.send = (m, opts) => {
  if (m.method === "tools/call") sentCall = { id: m.id, progressToken: m.params?._meta?.progressToken };
  return send(m, opts);
};

const client = new Client({ name: "acgs-ts-agent", version: "1.0.0" });
const errors = [];
client.onerror = (err) => errors.push(String(err && err.message ? err.message : err));
await client.connect(transport);
const { tools } = await client.listTools();
const calls = [];
for (const c of JSON.parse(callsJSON || "[]")) {
  const progress = [];
  const opts = c.progress ? { onprogress: (p) => progress.push(p), resetTimeoutOnProgress: true } : undefined;
  let entry;
  try {
    entry = { result: await client.callTool({ name: c.name, arguments: c.arguments ?? {} }, undefined, opts) };
  } catch (err) {
    entry = { error: String(err && err.message ? err.message : err) };
  }
  if (c.progress) Object.assign(entry, sentCall, { progress });
  calls.push(entry);
}
process.stdout.write(JSON.stringify({ tools: tools.map((t) => t.name), calls, received, errors }) + "\n");
await client.close();
