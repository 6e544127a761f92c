#!/usr/bin/env bash
# The load tool's own overhead (shared/spec/performance.md: `acgs load` p50
# and p99 within 1.2 x vegeta's at the same rate). One `acgs serve`, its cache
# warm so that its own time is small and steady; then, at each open-loop rate,
# vegeta and `acgs load --rate` send the same request (same method, path, body
# byte for byte, Content-Type) to it: in turns (vegeta, acgs load, vegeta, ...)
# so both see the same machine within the same minute, and together (both at
# once, each at half the rate) so both see the same stalls of this shared
# machine (a p99 over 10 s here is mostly the stalls that fell into the run).
# Prints one table with the ratios (and writes it to $OUT/loadcheck.md).
# Listens on 127.0.0.1 only and stops at exit.
#
#   scripts/loadcheck.sh     RATES="2000 5000" DURATION=10s ROUNDS=3 CONNS=64
#                            MODES="turns together" PROFILE=1
#                            REQUEST=testdata/requests/safe.json
#                            LOADER=bin/acgs (the binary whose load command is measured)
#
# Two clocks. acgs load measures each request from its scheduled send time (so
# its figure also holds its own lateness and any stall of its process) and
# reports the time from the actual send beside it; vegeta reports the time from
# when its worker starts the request, and its raw results give the other (its
# pacer sends request k when it is due and never early). Both clocks are
# printed for both tools, with the ratios on each, and the ratio of acgs load's
# own figure to vegeta's own. Percentiles: vegeta's exact (nearest rank over
# its raw results), acgs load's from its HDR histogram (3 significant digits).
# Neither tool has a warm-up: both open their connections inside the measured
# window. vegeta gets the same bound on requests in flight as acgs load
# (-max-workers $CONNS): with its default (no bound), a stall of this shared
# machine makes it start hundreds of workers and connections, and its
# latencies collapse into seconds (seen here on 2026-12-05: p50 5.9-9.7 s at
# 5,000 req/s, 2,230 errors), which measures vegeta's reaction to a stall,
# not the service.
# PROFILE=1 writes a CPU profile of the last acgs load run in turns
# ($OUT/acgs-load.pprof).
set -euo pipefail
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RATES=${RATES:-2000 5000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-turns together}
LOADER=${LOADER:-bin/acgs} # the acgs binary whose load command is measured (another build, to compare)
CONNS=${CONNS:-64}
REQUEST=${REQUEST:-testdata/requests/safe.json}
URLPATH=${URLPATH:-/v1/data/acgs/main/decision}
OUT=${OUT:-$ROOT/ci-validation-results/loadcheck}
VEGETA_VERSION=v12.13.0
mkdir -p "$OUT" bin
for b in curl python3; do command -v $b >/dev/null || { echo "loadcheck.sh needs $b (Debian package: curl, python3)"; exit 1; }; done
go build -o bin/acgs ./cmd/acgs
[ -x bin/vegeta ] || GOBIN="$ROOT/bin" go install github.com/tsenart/vegeta/v12@$VEGETA_VERSION

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_url() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "not ready: $1"; return 1; }

PORT=$(freeport)
URL=http://127.0.0.1:$PORT
PORT=$PORT HOST=127.0.0.1 LOG_LEVEL=warn bin/acgs serve >"$OUT/acgs-serve.log" 2>&1 & pids+=($!)
wait_url "$URL/health/ready"

# Warm: the workload's warm-up set, then the request itself, until the
# service answers it from its cache.
curl -fsS -X POST "$URL/v1/cache/warm" >/dev/null
for _ in 1 2 3; do curl -fsS -H 'Content-Type: application/json' --data-binary @"$REQUEST" "$URL$URLPATH" >"$OUT/answer.json"; done
python3 - "$OUT/answer.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert "allow" in d, d
print(f"  request answered allow={d['allow']} cache_hit={d.get('cache_hit')} cache_tier={d.get('cache_tier')}")
PY
REQ_ABS=$(cd "$(dirname "$REQUEST")" && pwd)/$(basename "$REQUEST")
printf 'POST %s%s\nContent-Type: application/json\n@%s\n' "$URL" "$URLPATH" "$REQ_ABS" >"$OUT/vegeta-targets.txt"
# A short unmeasured run of each tool, so neither meets a cold server or a
# cold page cache of its own binary first.
bin/vegeta attack -targets="$OUT/vegeta-targets.txt" -rate=500/s -duration=1s >/dev/null
$LOADER load --host "$URL" --request "$REQUEST" --path "$URLPATH" --rate 500 --duration 1s -q \
  --min-compliance 0 --p99-ms 100000 >/dev/null || true

load() { cut -d' ' -f1 /proc/loadavg; }
# One row per run, tab-separated: rate how round tool p50 p99 (from the
# schedule) p50 p99 (from the actual send) late-p50 late-p99 achieved errors
# requests load
ROWS="$OUT/rows.tsv"
: >"$ROWS"
show() { tail -1 "$ROWS" | awk -F'\t' '{printf "  %-9s %s/s %s %s: p50 %s ms, p99 %s ms from the schedule; p50 %s ms, p99 %s ms from the send; sent late p50 %s ms, p99 %s ms; %s req/s, %s errors, load %s\n", $4, $1, $2, $3, $5, $6, $7, $8, $9, $10, $11, $12, $14}'; }
vegeta_exec() { # RATE HOW ROUND: run the attack, keep the load average around it
  local f="$OUT/vegeta-$1-$2-$3"
  load >"$f.load0"
  bin/vegeta attack -targets="$OUT/vegeta-targets.txt" -rate="$1/s" -duration="$DURATION" -max-workers="$CONNS" >"$f.bin"
  load >"$f.load1"
}
vegeta_row() { # RATE HOW ROUND
  local f="$OUT/vegeta-$1-$2-$3"
  bin/vegeta encode --to csv <"$f.bin" >"$f.csv"
  bin/vegeta report -type=json <"$f.bin" >"$f.json"
  # vegeta's latency runs from when a worker starts the request. Its pacer
  # sleeps until request k is due, at its start + (k+1)/rate, and never sends
  # early, so its start is taken as the earliest start_k - k/rate over the
  # run (which favours vegeta: lateness common to all its requests is not
  # seen). Measured from there, its figure is acgs load's, lateness included.
  python3 - "$f.csv" "$f.json" "$1" "$2" "$3" "$(cat "$f.load0")-$(cat "$f.load1")" >>"$ROWS" <<'PY'
import csv, json, math, sys
path, rep, rate, how, n, ld = sys.argv[1:]
rows, errs = [], 0
for row in csv.reader(open(path)):
    rows.append((int(row[8]), int(row[0]), int(row[2])))  # seq, start (unix ns), latency (ns)
    if row[1] != "200" or row[5]:
        errs += 1
rows.sort()
every = 1e9 / float(rate)
t0 = min(ts - k * every for k, ts, _ in rows)
send = sorted(l for _, _, l in rows)
late = sorted(max(0, ts - (t0 + k * every)) for k, ts, _ in rows)
sched = sorted(ts + l - (t0 + k * every) for k, ts, l in rows)
q = lambda xs, p: xs[max(0, math.ceil(p * len(xs)) - 1)] / 1e6
r = json.load(open(rep))
print("\t".join([rate, how, n, "vegeta"] + [f"{q(x, p):.3f}" for x in (sched, send, late) for p in (0.5, 0.99)] +
      [f"{r['rate']:.1f}", str(errs), str(len(rows)), ld]))
PY
  show
}
acgs_exec() { # RATE HOW ROUND [profile]
  local f="$OUT/acgs-$1-$2-$3" prof=()
  [ "${4:-}" = profile ] && prof=(--cpuprofile "$OUT/acgs-load.pprof")
  load >"$f.load0"
  $LOADER load --host "$URL" --request "$REQUEST" --path "$URLPATH" --rate "$1" --duration "$DURATION" \
    --connections "$CONNS" -q --min-compliance 0 --p99-ms 100000 --json "$f.json" "${prof[@]}" >"$f.txt" 2>&1 || true
  load >"$f.load1"
}
acgs_row() { # RATE HOW ROUND
  local f="$OUT/acgs-$1-$2-$3"
  python3 - "$f.json" "$1" "$2" "$3" "$(cat "$f.load0")-$(cat "$f.load1")" >>"$ROWS" <<'PY'
import json, sys
path, rate, how, n, ld = sys.argv[1:]
d = json.load(open(path))
t, s, g = d["total"], d["service_latency"], d["send_lag"]
ok = "" if d["valid"] else " (invalid: " + d.get("invalid_reason", "") + ")"
print("\t".join([rate, how, n, "acgs load"] + [f"{x[k]:.3f}" for x in (t["latency"], s, g) for k in ("p50_ms", "p99_ms")] +
      [f"{d['achieved_rate']:.1f}{ok}", str(t["failures"] + t["shed"]), str(t["requests"]), ld]))
PY
  show
}

START=$(date -u +%Y-%m-%dT%H:%MZ)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for rate in $RATES; do
  for how in $MODES; do
    echo "== $rate req/s at the server, $how, $DURATION each, $ROUNDS rounds"
    for n in $(seq 1 "$ROUNDS"); do
      p=""; [ "${PROFILE:-0}" = 1 ] && [ "$rate" = "${RATES##* }" ] && [ "$how" = turns ] && [ "$n" = "$ROUNDS" ] && p=profile
      r=$rate
      if [ "$how" = together ]; then
        r=$((rate / 2)) # each: the server answers the same rate as in turns
        vegeta_exec "$r" "$how" "$n" & vp=$!
        acgs_exec "$r" "$how" "$n" $p
        wait $vp
      else
        vegeta_exec "$r" "$how" "$n"
        acgs_exec "$r" "$how" "$n" $p
      fi
      vegeta_row "$r" "$how" "$n"
      acgs_row "$r" "$how" "$n"
    done
  done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$ROWS" "$START" "$LOAD0" "$LOAD1" "$DURATION" "$CONNS" "$REQUEST" "$URLPATH" "$LOADER" <<'PY' | tee "$OUT/loadcheck.md"
import sys, statistics, os
rows_path, start, load0, load1, dur, conns, req, path, loader = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(rows_path) if l.strip()]
print(f"### scripts/loadcheck.sh — {start}, {os.cpu_count()} CPUs, load average {load0} at the start, {load1} at the end")
print()
print(f"One warm `acgs serve`; POST {path} with {req} (Content-Type: application/json), open loop, {dur} per run, "
      f"no warm-up; vegeta attack -max-workers {conns} and `{loader} load --connections {conns}`, in turns (vegeta, then acgs load) "
      "or together (both at once, each at half the rate, so that the server answers the same rate; the rate column is each tool's). "
      "\"From the schedule\": from the time the request was due (acgs load's figure; for vegeta computed from its results); "
      "\"from the send\": from the time the tool started it (vegeta's own figure).")
print()
print("| rate | how | round | tool | p50 ms | p99 ms | p50 / p99 ms from the send | sent late p50 / p99 ms | achieved req/s | errors | requests | load (1 min) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} / {r[7]} | {r[8]} / {r[9]} | {r[10]} | {r[11]} | {r[12]} | {r[13]} |")
print()
print("Ratios acgs load / vegeta: the median over the rounds of each round's ratio (the rounds' ratios in brackets); target ≤ 1.2:")
print()
print("| rate | how | p50, from the schedule | p99, from the schedule | p50, from the send | p99, from the send | p50, acgs from the schedule / vegeta's own | p99, same |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for key in dict.fromkeys((r[0], r[1]) for r in rows):
    v = [r for r in rows if (r[0], r[1]) == key and r[3] == "vegeta"]
    a = [r for r in rows if (r[0], r[1]) == key and r[3] == "acgs load"]
    def cell(ai, vi):
        per = [float(x[ai]) / float(y[vi]) for x, y in zip(a, v)]
        return f"{statistics.median(per):.2f} ({', '.join(f'{p:.2f}' for p in per)})"
    print(f"| {key[0]} | {key[1]} | {cell(4, 4)} | {cell(5, 5)} | {cell(6, 6)} | {cell(7, 7)} | {cell(4, 6)} | {cell(5, 7)} |")
PY
