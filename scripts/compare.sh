#!/usr/bin/env bash
# The side-by-side run of shared/spec/performance.md: the stock OPA server of
# go.mod's version, the no-op HTTP floor, and acgs serve (L1 only, and L1+L2
# with a local redis-server) answer the same workload on this machine, through
# wrk (closed loop) and acgs load --rate (open loop, latency from the scheduled
# send time). Prints one table of absolute figures and ratios (and writes it to
# $OUT/compare.md). Everything listens on 127.0.0.1 and stops at exit.
#
#   scripts/compare.sh                 DURATION=10s CONNS=32 THREADS=2 ROUNDS=3
#
# The warm ratios to the floor come from ROUNDS rounds that each run the
# floor and then acgs (L1, L1+L2) back to back: the machine's load drifts
# over a minute by more than the 15% the target leaves, so each round's
# ratio is taken within seconds and the table gives their median, and all
# of them.
set -euo pipefail
# Loopback traffic never goes through a proxy the environment may set
# (module downloads still may).
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$ROOT/ci-validation-results/compare}
mkdir -p "$OUT" bin
for b in wrk redis-server curl python3; do command -v $b >/dev/null || { echo "compare.sh needs $b (Debian package: wrk, redis-server, curl, python3)"; exit 1; }; done
go build -o bin/acgs ./cmd/acgs
[ -x bin/opa ] || go build -o bin/opa github.com/open-policy-agent/opa

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_url() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "not ready: $1"; return 1; }

P_FLOOR=$(freeport); P_OPA=$(freeport); P_L1=$(freeport); P_L2=$(freeport); P_REDIS=$(freeport)
bin/acgs noop-server --addr 127.0.0.1:$P_FLOOR & pids+=($!)
bin/opa run --server --addr 127.0.0.1:$P_OPA --log-level error --bundle policies >"$OUT/opa.log" 2>&1 & pids+=($!)
redis-server --port $P_REDIS --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 & pids+=($!)
PORT=$P_L1 HOST=127.0.0.1 LOG_LEVEL=warn bin/acgs serve >"$OUT/acgs-l1.log" 2>&1 & pids+=($!)
PORT=$P_L2 HOST=127.0.0.1 LOG_LEVEL=warn REDIS_URL=redis://127.0.0.1:$P_REDIS CACHE_SIGNING_KEY=compare-signing-key-0123456789abcdef \
  bin/acgs serve >"$OUT/acgs-l2.log" 2>&1 & pids+=($!)
wait_url http://127.0.0.1:$P_FLOOR/
wait_url http://127.0.0.1:$P_OPA/health
wait_url http://127.0.0.1:$P_L1/health/ready
wait_url http://127.0.0.1:$P_L2/health/ready

bin/acgs workload-lua --dialect acgs > "$OUT/mixed-acgs.lua"
bin/acgs workload-lua --dialect opa > "$OUT/mixed-opa.lua"
bin/acgs workload-lua --dialect acgs --unique > "$OUT/unique-acgs.lua"
bin/acgs workload-lua --dialect opa --unique > "$OUT/unique-opa.lua"
bin/acgs workload-lua --dialect acgs --request-id > "$OUT/rid-acgs.lua"
bin/acgs workload-lua --dialect opa --request-id > "$OUT/rid-opa.lua"
bin/acgs workload-lua --dialect acgs --varied > "$OUT/varied-acgs.lua"
bin/acgs workload-lua --dialect opa --varied > "$OUT/varied-opa.lua"

# wrk_run NAME URL SCRIPT -> "rps p50_ms p99_ms errors"
declare -A RPS P50 P99 ERR
wrk_run() {
  local name=$1 url=$2 script=$3 out="$OUT/wrk-$1.txt"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$script" "$url" > "$out" 2>&1
  RPS[$name]=$(awk '/Requests\/sec/ {print $2}' "$out")
  P50[$name]=$(awk '$1=="50%" {print $2}' "$out")
  P99[$name]=$(awk '$1=="99%" {print $2}' "$out")
  # one table cell: "0", or "non-2xx N" and/or "socket errors: connect A, read B, ..."
  ERR[$name]=$(awk '/Non-2xx/ {e=e (e==""?"":"; ") "non-2xx " $NF}
    /Socket errors/ {sub(/^ *Socket errors: */, ""); e=e (e==""?"":"; ") "socket errors: " $0}
    END {print (e==""?"0":e)}' "$out")
  echo "  $name: ${RPS[$name]} req/s, p50 ${P50[$name]}, p99 ${P99[$name]}, errors ${ERR[$name]}"
}
warm() { curl -fsS -X POST "$1/v1/cache/warm" >/dev/null; }

# median of its arguments (the middle one; the lower middle of an even count)
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

echo "== closed loop: wrk -t$THREADS -c$CONNS -d$DURATION, workload acgs-mixed, $ROUNDS rounds of floor, acgs L1, acgs L1+L2"
warm http://127.0.0.1:$P_L1; warm http://127.0.0.1:$P_L2
declare -a R_FLOOR R_L1 R_L2 Q_L1 Q_L2
for round in $(seq 1 "$ROUNDS"); do
  wrk_run floor http://127.0.0.1:$P_FLOOR "$OUT/mixed-acgs.lua"
  wrk_run acgs_l1 http://127.0.0.1:$P_L1 "$OUT/mixed-acgs.lua"
  wrk_run acgs_l2 http://127.0.0.1:$P_L2 "$OUT/mixed-acgs.lua"
  for n in floor acgs_l1 acgs_l2; do cp "$OUT/wrk-$n.txt" "$OUT/wrk-$n-round$round.txt"; done
  R_FLOOR+=("${RPS[floor]}"); R_L1+=("${RPS[acgs_l1]}"); R_L2+=("${RPS[acgs_l2]}")
  Q_L1+=("$(python3 -c "print(f'{${RPS[acgs_l1]}/${RPS[floor]}:.2f}')")")
  Q_L2+=("$(python3 -c "print(f'{${RPS[acgs_l2]}/${RPS[floor]}:.2f}')")")
  echo "  round $round: acgs L1 ${Q_L1[-1]} x floor, L1+L2 ${Q_L2[-1]} x floor"
done
RPS[floor]=$(median "${R_FLOOR[@]}"); RPS[acgs_l1]=$(median "${R_L1[@]}"); RPS[acgs_l2]=$(median "${R_L2[@]}")
FLOOR_L1=$(median "${Q_L1[@]}"); FLOOR_L2=$(median "${Q_L2[@]}")
wrk_run opa http://127.0.0.1:$P_OPA "$OUT/mixed-opa.lua"
echo "== closed loop, every request carrying a never-repeated request_id (the policy does not read it)"
# L1 hit rate from the service's own metrics, over the measured run only
# (the warm-up is the workload's warm set, which carries no request ids).
l1_counts() { curl -fsS "$1/metrics" | awk '/^acgs_cache_hits_total\{tier="l1"\}/ {h=$2} /^acgs_cache_misses_total\{tier="l1"\}/ {m=$2} END {printf "%d %d\n", h, m}'; }
wrk_run opa_rid http://127.0.0.1:$P_OPA "$OUT/rid-opa.lua"
warm http://127.0.0.1:$P_L1
read -r H0 M0 < <(l1_counts http://127.0.0.1:$P_L1)
wrk_run acgs_rid http://127.0.0.1:$P_L1 "$OUT/rid-acgs.lua"
read -r H1 M1 < <(l1_counts http://127.0.0.1:$P_L1)
RID_HIT=$(python3 -c "h,m=$H1-$H0,$M1-$M0; print(f'{100*h/(h+m):.2f}%' if h+m else 'n/a')")
echo "  acgs_rid L1 hit rate over the run: $RID_HIT ($((H1-H0)) hits, $((M1-M0)) misses)"
echo "== closed loop, every input unique in what the policy reads (no cache help)"
wrk_run opa_unique http://127.0.0.1:$P_OPA "$OUT/unique-opa.lua"
wrk_run acgs_unique http://127.0.0.1:$P_L1 "$OUT/unique-acgs.lua"
echo "== closed loop, every decision-relevant field of every request drawn across its domain (acgs workload-lua --varied; no cache can help)"
# Decisions by outcome from the service's metrics, summed over paths.
# Shed ones (503 overloaded: no evaluation slot in time) explain wrk's non-2xx.
outcomes() { curl -fsS "$1/metrics" | awk '/^acgs_decisions_total\{/ && /outcome="allow"/ {a+=$NF} /^acgs_decisions_total\{/ && /outcome="deny"/ {d+=$NF} /^acgs_decisions_shed_total\{/ {s+=$NF} END {printf "%d %d %d\n", a, d, s}'; }
wrk_run opa_varied http://127.0.0.1:$P_OPA "$OUT/varied-opa.lua"
read -r H0 M0 < <(l1_counts http://127.0.0.1:$P_L1)
read -r A0 D0 S0 < <(outcomes http://127.0.0.1:$P_L1)
wrk_run acgs_varied http://127.0.0.1:$P_L1 "$OUT/varied-acgs.lua"
read -r H1 M1 < <(l1_counts http://127.0.0.1:$P_L1)
read -r A1 D1 S1 < <(outcomes http://127.0.0.1:$P_L1)
VARIED_HIT=$(python3 -c "h,m=$H1-$H0,$M1-$M0; print(f'{100*h/(h+m):.2f}%' if h+m else 'n/a')")
VARIED_SHED=$((S1-S0))
VARIED_ALLOW=$(python3 -c "a,d=$A1-$A0,$D1-$D0; print(f'{100*a/(a+d):.1f}%' if a+d else 'n/a')")
echo "  acgs_varied L1 hit rate over the run: $VARIED_HIT ($((H1-H0)) hits, $((M1-M0)) misses); allowed $VARIED_ALLOW ($((A1-A0)) allow, $((D1-D0)) deny); shed $((S1-S0)) (503 overloaded)"
grep -h "varied requests generated" "$OUT/wrk-opa_varied.txt" "$OUT/wrk-acgs_varied.txt" | sed 's/^/  /'

# Open loop at 25% of the floor's closed-loop maximum.
RATE=$(python3 -c "print(int(float('${RPS[floor]}')*0.25))")
echo "== open loop: acgs load --rate $RATE (25% of the floor's max), latency from scheduled send time"
declare -A OP50 OP99 OVALID
load_run() {
  local name=$1 url=$2
  set +e
  bin/acgs load --host "$url" --rate "$RATE" --duration "$DURATION" --warmup 2s -q --min-compliance 0 --p99-ms 100000 \
    --connections 64 --json "$OUT/load-$name.json" > "$OUT/load-$name.txt" 2>&1
  set -e
  read -r OP50[$name] OP99[$name] OVALID[$name] < <(python3 - "$OUT/load-$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
lat = d["total"]["latency"]
print(round(lat["p50_ms"], 3), round(lat["p99_ms"], 3), d.get("valid"))
PY
)
  echo "  $name: p50 ${OP50[$name]} ms, p99 ${OP99[$name]} ms, valid ${OVALID[$name]}"
}
load_run floor http://127.0.0.1:$P_FLOOR
load_run acgs_l1 http://127.0.0.1:$P_L1

ratio() { python3 -c "a,b=float('$1' or 0),float('$2' or 0); print(f'{a/b:.2f}' if b else 'n/a')"; }
ms() { python3 -c "
s='$1'
import re
m=re.match(r'([0-9.]+)(us|ms|s)',s)
print('?' if not m else {'us':float(m.group(1))/1000,'ms':float(m.group(1)),'s':float(m.group(1))*1000}[m.group(2)])"; }
{
  echo "### scripts/compare.sh — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "wrk -t$THREADS -c$CONNS -d$DURATION on loopback, workload acgs-mixed (70% safe, 20% evolution, 10% prohibited); acgs warmed with POST /v1/cache/warm; OPA answers the same inputs in its dialect. The floor and acgs ran in $ROUNDS rounds (floor, L1, L1+L2 back to back); the ratio to the floor is the median of the rounds' ratios, and req/s, p50, p99 are the medians' (req/s) or the last round's (p50, p99)."
  echo
  echo "| what | req/s | p50 | p99 | errors | ratio | target |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  echo "| no-op floor (median of $ROUNDS rounds) | ${RPS[floor]} | ${P50[floor]} | ${P99[floor]} | ${ERR[floor]} | 1.00 × floor | |"
  echo "| stock OPA $(bin/opa version | awk '/^Version/ {print $2}') | ${RPS[opa]} | ${P50[opa]} | ${P99[opa]} | ${ERR[opa]} | $(ratio ${RPS[opa]} ${RPS[floor]}) × floor | |"
  echo "| acgs, L1 (median of $ROUNDS rounds) | ${RPS[acgs_l1]} | ${P50[acgs_l1]} | ${P99[acgs_l1]} | ${ERR[acgs_l1]} | $FLOOR_L1 × floor (rounds: ${Q_L1[*]}), $(ratio ${RPS[acgs_l1]} ${RPS[opa]}) × OPA | ≥ 0.85 × floor, ≥ 10 × OPA |"
  echo "| acgs, L1+L2 (Redis; median of $ROUNDS rounds) | ${RPS[acgs_l2]} | ${P50[acgs_l2]} | ${P99[acgs_l2]} | ${ERR[acgs_l2]} | $FLOOR_L2 × floor (rounds: ${Q_L2[*]}), $(ratio ${RPS[acgs_l2]} ${RPS[opa]}) × OPA | ≥ 0.85 × floor, ≥ 10 × OPA |"
  echo "| stock OPA, never-repeated request_id | ${RPS[opa_rid]} | ${P50[opa_rid]} | ${P99[opa_rid]} | ${ERR[opa_rid]} | | |"
  echo "| acgs, L1, never-repeated request_id | ${RPS[acgs_rid]} | ${P50[acgs_rid]} | ${P99[acgs_rid]} | ${ERR[acgs_rid]} | $(ratio ${RPS[acgs_rid]} ${RPS[opa_rid]}) × OPA, L1 hit rate $RID_HIT | ≥ 10 × OPA, ≥ 99% hits |"
  echo "| stock OPA, unique inputs | ${RPS[opa_unique]} | ${P50[opa_unique]} | ${P99[opa_unique]} | ${ERR[opa_unique]} | | |"
  echo "| acgs, unique inputs | ${RPS[acgs_unique]} | ${P50[acgs_unique]} | ${P99[acgs_unique]} | ${ERR[acgs_unique]} | $(ratio ${RPS[acgs_unique]} ${RPS[opa_unique]}) × OPA | ≥ 2 × OPA |"
  echo "| stock OPA, varied inputs (every decision-relevant field varies) | ${RPS[opa_varied]} | ${P50[opa_varied]} | ${P99[opa_varied]} | ${ERR[opa_varied]} | | |"
  echo "| acgs, L1, varied inputs (every decision-relevant field varies) | ${RPS[acgs_varied]} | ${P50[acgs_varied]} | ${P99[acgs_varied]} | ${ERR[acgs_varied]} | $(ratio ${RPS[acgs_varied]} ${RPS[opa_varied]}) × OPA, L1 hit rate $VARIED_HIT, $VARIED_ALLOW allowed, $VARIED_SHED shed | ≥ 3 × OPA, no cache hits |"
  echo
  echo "Varied inputs: \`acgs workload-lua --varied\` (60% constitutional evaluations, 20% evolution approvals, 10% data access, 10% prohibited actions), every field the constitution reads drawn per request in the wrk script; L1 hit rate and allowed share from the service's /metrics over the run."
  echo
  echo "Open loop, acgs load --rate $RATE (25% of the floor's max) for $DURATION after 2s warm-up, latency from the scheduled send time:"
  echo
  echo "| what | p50 ms | p99 ms | valid run | ratio | target |"
  echo "| --- | --- | --- | --- | --- | --- |"
  echo "| no-op floor | ${OP50[floor]} | ${OP99[floor]} | ${OVALID[floor]} | | |"
  echo "| acgs, L1 | ${OP50[acgs_l1]} | ${OP99[acgs_l1]} | ${OVALID[acgs_l1]} | $(ratio ${OP99[acgs_l1]} ${OP99[floor]}) × floor p99 | p99 ≤ 1 ms and ≤ 1.3 × floor |"
} | tee "$OUT/compare.md"
