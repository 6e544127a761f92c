#!/usr/bin/env bash
# Performance validation gate, run by .github/workflows/performance-validation.yml
# and runnable by hand. It builds acgs, starts redis-server (when installed) and
# `acgs serve` on free loopback ports, then runs
#
#   bench  (per-scenario latency, throughput per concurrency, cold vs warm)
#   load   closed loop (users) and open loop (constant rate, latency from the
#          scheduled send time) with SLO gates
#   slo    the service's own Prometheus metrics over the open-loop window
#   regress compare (Mann-Whitney U + threshold) against the stored history,
#          then record this run (only when bench and the regression gates
#          passed) and summarise the 30-day trend
#
# With BASELINE_REF set (a pull request's base branch), the baseline commit is
# also built and benchmarked on this machine in this run, and the regression
# gate compares against that side-by-side result: absolute numbers from another
# day or another runner are too noisy to fail a pull request on. The history
# comparison is then reported but does not gate.
#
# Results go to ci-validation-results/ (summary.md is the pull-request comment).
# Exit status is non-zero when any gate failed; every gate runs regardless so
# the report is complete. Everything started here is stopped on exit.
#
# Knobs (environment):
#   RESULTS_DIR                   default ci-validation-results
#   PERF_HISTORY_STORE            directory or s3://bucket/prefix (default $RESULTS_DIR/history)
#   COMMIT_SHA                    default $GITHUB_SHA, else git rev-parse HEAD
#   BASELINE_REF                  git ref to benchmark side by side (default: none)
#   BENCH_REQUESTS BENCH_COUNT BENCH_CONCURRENCY   default 1000, 10, 10,50
#                                 (10 rounds: Holm over the 18 gated metrics
#                                 catches a 1.3x slowdown at 10% noise in 97% of
#                                 runs, 6 rounds in 60%; TestGatePower. Fewer
#                                 than 6, or more gated metrics than 6 rounds
#                                 allow, make regress compare exit 2)
#   CLOSED_USERS CLOSED_RUN_TIME CLOSED_P99_MS     default 8, 15s, 25
#   OPEN_RATE OPEN_DURATION WARMUP                 default 1000, 15 (s), 3 (s)
#   PERFORMANCE_TARGET_P99_MS     p99 gate of the open loop and slo (default 5)
#   REGRESSION_THRESHOLD_PERCENT  default 10
#   REGRESS_ALLOW_MISSING         1: benchmarks of the baseline missing from this
#                                 run pass (renamed or removed on purpose); unset,
#                                 a missing benchmark (one that crashed) fails.
#                                 The workflow sets it for a PR labelled
#                                 perf-allow-missing (add the label, then push)
#                                 and for a run by hand with allow_missing
#   PERF_HISTORY_RECORD           "always": record this run into the history even
#                                 when a regression gate failed. Unset, a run is
#                                 recorded only when bench and every regression
#                                 gate (regress, regress-history, informational
#                                 or not) passed: a regression recorded would be
#                                 the next run's baseline and pass from then on.
#                                 To accept a regression deliberately, run the
#                                 workflow by hand on main with accept_regression
#                                 (it sets PERF_HISTORY_RECORD=always), or, for a
#                                 store of your own, record its bench.txt by hand:
#                                   acgs regress record --store STORE \
#                                     --input ci-validation-results/bench.txt --commit SHA
#   PERF_HISTORY_ALLOW_EMPTY      1: a missing or empty history store passes the
#                                 history gate (a first run; the workflow sets it
#                                 only when its cache restored nothing, and says
#                                 so). Unset, a missing store fails the gate (exit
#                                 2 of regress compare): a mistyped store must not
#                                 pass as "nothing to compare".
set -uo pipefail
# Loopback traffic never goes through a proxy the environment may set
# (module downloads still may).
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${RESULTS_DIR:-ci-validation-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
HISTORY=${PERF_HISTORY_STORE:-$OUT/history}
COMMIT=${COMMIT_SHA:-${GITHUB_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}}
BENCH_REQUESTS=${BENCH_REQUESTS:-1000}
BENCH_COUNT=${BENCH_COUNT:-10}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-10,50}
CLOSED_USERS=${CLOSED_USERS:-8}
CLOSED_RUN_TIME=${CLOSED_RUN_TIME:-15s}
CLOSED_P99_MS=${CLOSED_P99_MS:-25}
OPEN_RATE=${OPEN_RATE:-1000}
OPEN_DURATION=${OPEN_DURATION:-15}
WARMUP=${WARMUP:-3}
export PATH="$PATH:/usr/sbin:/usr/local/go/bin"

step() { printf '\n==> %s\n' "$*"; }

# --- processes we start, stopped on exit (by their own PIDs only) -------------
PIDS=()
cleanup() {
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[$i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# wait_http URL SECONDS: poll until URL answers 200.
wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# --- gates --------------------------------------------------------------------
GATES=()   # "name|status|detail"
FAILED=0
RECORD_BLOCKED=""  # the gates whose failure keeps this run out of the history
gate() { # gate NAME EXIT_CODE DETAIL [info]: an info gate is reported, never fails the run
  local status=pass
  case "$1" in
    bench | regress | regress-history) [ "$2" -ne 0 ] && RECORD_BLOCKED="$RECORD_BLOCKED $1" ;;
  esac
  if [ "$2" -ne 0 ]; then
    if [ "${4:-}" = info ]; then status="failed (informational)"; else status=FAIL; FAILED=1; fi
  fi
  GATES+=("$1|$status|$3")
  echo "gate $1: $status ($3)"
}

# start_serve BINARY PORT REDIS_DB LOG: start `acgs serve` on 127.0.0.1 and
# wait for /health; sets STARTED_PID (not a $(...) call: the server must be a
# child of this shell so that the exit trap can stop and reap it).
start_serve() {
  local bin=$1 port=$2 db=$3 log=$4 redis=""
  [ -n "$REDIS_BASE" ] && redis="$REDIS_BASE/$db"
  PORT=$port HOST=127.0.0.1 REDIS_URL=$redis LOG_LEVEL=${LOG_LEVEL:-warn} \
    CACHE_SIGNING_KEY=$SIGNING_KEY "$bin" serve >"$log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  if ! wait_http "http://127.0.0.1:$port/health" 60; then
    echo "acgs serve ($bin) did not become healthy; log:" >&2
    tail -50 "$log" >&2
    return 1
  fi
}

# run_bench URL OUTFILE JSONFILE: one round, appended to OUTFILE.
run_bench() {
  "$ACGS" bench --url "$1" --requests "$BENCH_REQUESTS" --concurrency "$BENCH_CONCURRENCY" \
    --count 1 --cold-samples 100 --benchfmt --save-json "$3" >>"$2"
}

step "building acgs"
go build -o bin/acgs ./cmd/acgs || { echo "build failed"; exit 1; }
ACGS="$ROOT/bin/acgs"

REDIS_BASE=""
if command -v redis-server >/dev/null 2>&1; then
  REDIS_PORT=$(free_port) || exit 1
  step "starting redis-server on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --daemonize no >"$OUT/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
    sleep 0.1
  done
  REDIS_BASE="redis://127.0.0.1:$REDIS_PORT"
else
  echo "redis-server not installed: the service runs with L1 only"
fi
SIGNING_KEY=${CACHE_SIGNING_KEY:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}

# --- side-by-side baseline (pull requests) ---------------------------------------
AB_STORE="$OUT/ab-history"
BASE_SHA=""
BASE_PID=""
if [ -n "${BASELINE_REF:-}" ]; then
  BASE_SHA=$(git rev-parse --verify "${BASELINE_REF}^{commit}" 2>/dev/null || true)
  if [ -z "$BASE_SHA" ]; then
    echo "BASELINE_REF $BASELINE_REF is not a commit here: no side-by-side baseline"
  elif [ "$BASE_SHA" = "$(git rev-parse HEAD)" ]; then
    echo "BASELINE_REF is HEAD: no side-by-side baseline"
    BASE_SHA=""
  else
    step "building the baseline $BASELINE_REF ($BASE_SHA)"
    WT=$(mktemp -d)
    if git worktree add --detach "$WT" "$BASE_SHA" >/dev/null 2>&1 &&
      (cd "$WT" && go build -o "$OUT/bin-baseline/acgs" ./cmd/acgs); then
      BASE_PORT=$(free_port) || exit 1
      if start_serve "$OUT/bin-baseline/acgs" "$BASE_PORT" 1 "$OUT/serve-baseline.log"; then
        BASE_PID=$STARTED_PID
        BASE_URL="http://127.0.0.1:$BASE_PORT"
      else
        BASE_SHA=""
      fi
    else
      echo "the baseline does not build: no side-by-side baseline"
      BASE_SHA=""
    fi
    git worktree remove --force "$WT" >/dev/null 2>&1 || rm -rf "$WT"
  fi
fi

PORT=$(free_port) || exit 1
URL="http://127.0.0.1:$PORT"
step "starting acgs serve on $URL"
start_serve "$ACGS" "$PORT" 0 "$OUT/serve.log" || exit 1
SERVE_PID=$STARTED_PID
echo "healthy"

# Rounds alternate between the baseline and this build so that a change in the
# machine's load during the run hits both sides alike.
step "bench ($BENCH_REQUESTS requests x concurrency $BENCH_CONCURRENCY x $BENCH_COUNT rounds${BASE_SHA:+, alternating with the baseline})"
: >"$OUT/bench.txt"
[ -n "$BASE_SHA" ] && : >"$OUT/bench-baseline.txt"
rc=0
for round in $(seq 1 "$BENCH_COUNT"); do
  if [ -n "$BASE_SHA" ]; then
    run_bench "$BASE_URL" "$OUT/bench-baseline.txt" "$OUT/bench-baseline.json" || BASE_SHA=""
  fi
  run_bench "$URL" "$OUT/bench.txt" "$OUT/bench.json" || rc=1
  echo "round $round done"
done
gate bench $rc "$(grep -c '^Benchmark' "$OUT/bench.txt" 2>/dev/null || echo 0) benchmark lines"
if [ -n "$BASE_PID" ]; then
  kill "$BASE_PID" 2>/dev/null
  wait "$BASE_PID" 2>/dev/null
fi
if [ -n "$BASE_SHA" ]; then
  "$ACGS" regress record --store "$AB_STORE" --input "$OUT/bench-baseline.txt" --commit "$BASE_SHA" || BASE_SHA=""
fi

step "load, closed loop: $CLOSED_USERS users for $CLOSED_RUN_TIME"
"$ACGS" load --host "$URL" --users "$CLOSED_USERS" --spawn-rate "$CLOSED_USERS" \
  --run-time "$CLOSED_RUN_TIME" --warmup "${WARMUP}s" --p99-ms "$CLOSED_P99_MS" \
  --report "$OUT/load-closed" --json "$OUT/load-closed.json" -q | tee "$OUT/load-closed.txt"
gate load-closed "${PIPESTATUS[0]}" "p99 <= ${CLOSED_P99_MS} ms, errors <= 1%, compliance >= 95%"

step "load, open loop: $OPEN_RATE req/s for ${OPEN_DURATION}s (+${WARMUP}s warm-up), slo over the same window"
"$ACGS" load --host "$URL" --rate "$OPEN_RATE" --duration "${OPEN_DURATION}s" --warmup "${WARMUP}s" \
  --report "$OUT/load-open" --json "$OUT/load-open.json" -q >"$OUT/load-open.txt" 2>&1 &
LOAD_PID=$!
sleep "$WARMUP"
# The service's own view of the measured window: two scrapes, difference judged.
"$ACGS" slo --metrics-url "$URL/metrics" --interval "$((OPEN_DURATION > 3 ? OPEN_DURATION - 2 : 1))s" \
  | tee "$OUT/slo.txt"
slo_rc=${PIPESTATUS[0]}
wait "$LOAD_PID"
load_rc=$?
cat "$OUT/load-open.txt"
gate load-open "$load_rc" "achieved >= 95% of $OPEN_RATE req/s, p99 <= ${PERFORMANCE_TARGET_P99_MS:-5} ms from scheduled time"
gate slo "$slo_rc" "service metrics: p99, 5xx rate, cache hit rate"
"$ACGS" slo --metrics-url "$URL/metrics" --json >"$OUT/slo-cumulative.json" 2>/dev/null || true

ALLOW_MISSING=()
[ "${REGRESS_ALLOW_MISSING:-}" = 1 ] && ALLOW_MISSING=(--allow-missing)
if [ -n "$BASE_SHA" ]; then
  step "regress compare against the side-by-side baseline $BASE_SHA"
  "$ACGS" regress compare --store "$AB_STORE" --baseline-commit "$BASE_SHA" --input "$OUT/bench.txt" \
    --commit "$COMMIT" --markdown "$OUT/regression-report.md" "${ALLOW_MISSING[@]}" | tee "$OUT/regress-compare.txt"
  gate regress "${PIPESTATUS[0]}" "vs $BASELINE_REF on this runner: sec/op and req/s: Mann-Whitney U p < 0.05 (Holm-adjusted) and median worse by > ${REGRESSION_THRESHOLD_PERCENT:-10}%"
  HISTORY_MODE=info
else
  HISTORY_MODE=""
fi
step "regress compare against $HISTORY"
ALLOW_EMPTY=()
if [ "${PERF_HISTORY_ALLOW_EMPTY:-}" = 1 ]; then
  echo "PERF_HISTORY_ALLOW_EMPTY=1: an empty or missing history passes (first run)"
  ALLOW_EMPTY=(--allow-empty-history)
fi
"$ACGS" regress compare --store "$HISTORY" --input "$OUT/bench.txt" --commit "$COMMIT" \
  --markdown "$OUT/regression-history.md" "${ALLOW_EMPTY[@]}" "${ALLOW_MISSING[@]}" 2>"$OUT/regress-history.err" | tee "$OUT/regress-history.txt"
hist_rc=${PIPESTATUS[0]}
cat "$OUT/regress-history.err" >&2
hist_detail="vs the newest stored record: sec/op and req/s: Mann-Whitney U p < 0.05 (Holm-adjusted) and median worse by > ${REGRESSION_THRESHOLD_PERCENT:-10}%"
# Exit 2 is "could not judge", an empty history among other causes (Holm
# out of reach, nothing gated, a damaged store, a report not written). The
# error names the flag --allow-empty-history, which this script does not
# take: a first run by hand would fail, not be recorded, and every later
# run fail the same way. Name the script's own switch, only when compare
# marks the no-baseline case (its stable stderr line "no-baseline:").
if [ "$hist_rc" -eq 2 ] && [ "${PERF_HISTORY_ALLOW_EMPTY:-}" != 1 ] && grep -q '^no-baseline:' "$OUT/regress-history.err"; then
  echo "regress-history could not judge (exit 2, reason above). If $HISTORY is empty because this is a first run, run again with PERF_HISTORY_ALLOW_EMPTY=1 (this script's --allow-empty-history) to record the first baseline." >&2
  hist_detail="$hist_detail; could not judge: a first run with an empty history needs PERF_HISTORY_ALLOW_EMPTY=1"
fi
gate regress-history "$hist_rc" "$hist_detail" $HISTORY_MODE
[ -f "$OUT/regression-report.md" ] || cp "$OUT/regression-history.md" "$OUT/regression-report.md" 2>/dev/null

step "regress record + trend"
if [ -z "$RECORD_BLOCKED" ] || [ "${PERF_HISTORY_RECORD:-}" = always ]; then
  [ -n "$RECORD_BLOCKED" ] && echo "PERF_HISTORY_RECORD=always: recording although${RECORD_BLOCKED} failed"
  "$ACGS" regress record --store "$HISTORY" --input "$OUT/bench.txt" --commit "$COMMIT"
  rc=$?
  gate record $rc "stored under $HISTORY"
else
  echo "not recorded into $HISTORY:${RECORD_BLOCKED} failed (PERF_HISTORY_RECORD=always records it)"
  GATES+=("record|skipped|not stored:${RECORD_BLOCKED} failed, so this run is not the next baseline")
fi
"$ACGS" regress trend --store "$HISTORY" --days 30 --markdown "$OUT/trend.md" >"$OUT/trend.txt" || true

if ! kill -0 "$SERVE_PID" 2>/dev/null; then
  gate serve 1 "acgs serve died during the run (see serve.log)"
fi

# --- summary (the pull-request comment) ------------------------------------------
{
  echo "# ACGS-1 Lite performance validation"
  echo
  echo "Commit \`$COMMIT\` on $(nproc) CPU(s); results in the \`ci-validation-results\` artifact."
  echo
  echo "| gate | status | checks |"
  echo "|---|---|---|"
  for g in "${GATES[@]}"; do
    IFS='|' read -r name status detail <<<"$g"
    icon="✅"
    [ "$status" = FAIL ] && icon="❌"
    [ "$status" = "failed (informational)" ] && icon="⚠️"
    [ "$status" = skipped ] && icon="⏭️"
    echo "| $name | $icon $status | $detail |"
  done
  echo
  for f in load-closed load-open; do
    if [ -f "$OUT/$f.txt" ]; then
      echo "<details><summary>$f</summary>"
      echo
      echo '```'
      cat "$OUT/$f.txt"
      echo '```'
      echo "</details>"
      echo
    fi
  done
  if [ -f "$OUT/slo.txt" ]; then
    echo "<details><summary>slo (service metrics)</summary>"
    echo
    echo '```'
    cat "$OUT/slo.txt"
    echo '```'
    echo "</details>"
    echo
  fi
  [ -f "$OUT/regression-report.md" ] && cat "$OUT/regression-report.md" && echo
  if [ -n "$BASE_SHA" ] && [ -f "$OUT/regression-history.md" ]; then
    echo "<details><summary>against the stored history</summary>"
    echo
    sed 's/^## /### /' "$OUT/regression-history.md"
    echo
    echo "</details>"
    echo
  fi
  [ -f "$OUT/trend.md" ] && echo "<details><summary>30-day trend</summary>" && echo && cat "$OUT/trend.md" && echo && echo "</details>"
} >"$OUT/summary.md"

step "summary"
for g in "${GATES[@]}"; do echo "  $g"; done
echo "report: $OUT/summary.md"
exit $FAILED
