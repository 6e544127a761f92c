#!/usr/bin/env bash
# A bounded smoke run of the performance tools against a live instance, so
# that bench, load (open and closed loop) and slo cannot rot. The gates here
# are deliberately loose (a shared 2-core CI machine is not a benchmark
# rig): this checks that the tools run, measure and judge, not the figures.
set -euo pipefail
# Loopback traffic never goes through a proxy the environment may set
# (module downloads still may).
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/ci-validation-results/smoke}
mkdir -p "$OUT" bin
go build -o bin/acgs ./cmd/acgs

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18404)
url="http://127.0.0.1:$port"
PORT=$port HOST=127.0.0.1 LOG_LEVEL=warn bin/acgs serve >"$OUT/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "$url/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$url/health/ready" >/dev/null || { echo "service did not start:"; cat "$OUT/serve.log"; exit 1; }

echo "--- warm-up"
curl -fsS -X POST "$url/v1/cache/warm"; echo
echo "--- acgs bench"
bin/acgs bench --url "$url" --requests 200 --concurrency 4,8 --cold-samples 20 --save-json "$OUT/bench.json" | tee "$OUT/bench.txt"
bin/acgs bench --url "$url" --requests 100 --concurrency 4 --cold-samples 0 --benchfmt > "$OUT/bench.benchfmt"
grep -q '^Benchmark' "$OUT/bench.benchfmt" || { echo "bench --benchfmt printed no benchmark lines"; exit 1; }
echo "--- acgs load, closed loop"
bin/acgs load --host "$url" --users 4 --run-time 4s --warmup 1s -q --p99-ms 2000 --json "$OUT/load-closed.json"
echo "--- acgs load, open loop"
bin/acgs load --host "$url" --rate 200 --duration 4s --warmup 1s -q --p99-ms 2000 --json "$OUT/load-open.json" --report "$OUT/report"
ls "$OUT/report"/*.png >/dev/null
echo "--- acgs slo"
bin/acgs slo --metrics-url "$url/metrics" --p99-ms 2000 --cache-hit-rate 0.5
echo "--- acgs slo must fail an impossible objective"
if bin/acgs slo --metrics-url "$url/metrics" --p99-ms 0.000001 >/dev/null; then
  echo "slo accepted an impossible p99 objective"; exit 1
fi
echo "smoke run passed; results in $OUT"
