#!/usr/bin/env bash
# The MCP gateway's overhead (shared/spec/performance.md: added p50 ≤ 0.2 ms
# for a cached decision, throughput ≥ 0.8 × direct), two ways, each the
# gateway path against the direct path in the same run:
#
#   1. shared CPUs: agent, gateway and upstream in one process on all CPUs
#      (BenchmarkOverhead): the gateway's work is taken from the agent's
#      and the upstream's CPU.
#   2. own CPU: the gateway (the acgs binary) on CPU 1, the agent and the
#      upstream on CPU 0, one CPU each (BenchmarkOverheadOwnCPU), as a
#      gateway with its own CPU is deployed.
#
#   scripts/gateway-overhead.sh                 # 4000 calls a path, once
#   BENCHTIME=8000x COUNT=3 scripts/gateway-overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-4000x}
COUNT=${COUNT:-1}
command -v taskset >/dev/null || { echo "gateway-overhead: taskset is missing (apt-get install util-linux)" >&2; exit 1; }
taskset -c 0,1 true 2>/dev/null || { echo "gateway-overhead: needs CPUs 0 and 1 (taskset -c 0,1)" >&2; exit 1; }
mkdir -p bin
go build -o bin/acgs ./cmd/acgs
go test -c -o bin/gateway.test ./internal/gateway
export ACGS_BIN=$PWD/bin/acgs
for i in $(seq "$COUNT"); do
	echo "== round $i, $(date -u +%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "-- shared CPUs"
	bin/gateway.test -test.run '^$' -test.bench '^BenchmarkOverhead$' -test.benchtime "$BENCHTIME" | grep -E '^(Benchmark|--- FAIL|FAIL|panic)'
	echo "-- gateway on CPU 1; agent and upstream on CPU 0"
	ACGS_GATEWAY_CPU=1 GOMAXPROCS=1 taskset -c 0 bin/gateway.test -test.run '^$' -test.bench '^BenchmarkOverheadOwnCPU$' -test.benchtime "$BENCHTIME" | grep -E '^(Benchmark|--- FAIL|FAIL|panic|\s+bench_)'
done
