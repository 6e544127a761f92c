#!/usr/bin/env bash
# Reliability scenarios under faults, on loopback only, each bounded in time
# and request count. Every scenario is a Go test in internal/faults (the
# default test suite runs a short version of each but the soak); this script
# runs the full versions and collects their reports.
#
#   scripts/faults.sh                 every scenario but the soak (about 6 minutes)
#   scripts/faults.sh redis-kill hot-reload ...
#   scripts/faults.sh soak            the 10-minute soak (alone: it measures memory)
#
# Scenarios:
#   redis-kill     Redis SIGKILLed during a constant-rate load, restarted: 0 failed, L2 back within 5 s
#   redis-slow     DEBUG SLEEP 1 in a loop, then CLIENT PAUSE 3000: breaker opens, p99 within L2_TIMEOUT + evaluation
#   hot-reload     POLICY_BUNDLE_PATH symlink swapped and reloaded every second: 0 errors, no stale revision
#   bundle-server  bundle server down, then serving garbage / a rogue signature / a wrong hash: last good bundle serves
#   sigterm        SIGTERM to one of three instances behind nginx: in-flight complete, others take the rest
#   soak           FAULTS_SOAK_DURATION at FAULTS_SOAK_RATE: VmRSS growth < 10% after warm-up, goroutines flat
# (bundle-server and sigterm run on the fleet of scripts/cluster.sh.)
#
# Settings: FAULTS_RATE (requests/s, 200), FAULTS_PHASE (length of each
# before/during/after phase, 10s), FAULTS_SOAK_RATE (100), FAULTS_SOAK_DURATION
# (10m), FAULTS_OUT (report directory, default /tmp/acgs-faults-<time>).
# Each scenario writes <name>.json and <name>.md there; the Markdown is
# printed at the end. Exit status 1 when any scenario fails a check.
set -euo pipefail
# Loopback traffic never goes through a proxy the environment may set
# (module downloads still may).
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$PATH:/usr/sbin:/usr/local/go/bin"

out="${FAULTS_OUT:-${TMPDIR:-/tmp}/acgs-faults-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"

declare -A RUN=(
    [redis-kill]='^TestFaultRedisKill$'
    [redis-slow]='^TestFaultRedisSlow$'
    [hot-reload]='^TestFaultHotReload$'
    [bundle-server]='^TestFaultFleet$/^bundle-server$'
    [sigterm]='^TestFaultFleet$/^sigterm$'
    [soak]='^TestFaultSoak$'
)
order=(redis-kill redis-slow hot-reload bundle-server sigterm)

scenarios=("$@")
if [[ ${#scenarios[@]} -eq 0 || "${scenarios[0]}" == all ]]; then
    scenarios=("${order[@]}")
fi
for s in "${scenarios[@]}"; do
    [[ -n "${RUN[$s]:-}" ]] || { echo "faults.sh: unknown scenario $s (known: ${!RUN[*]})" >&2; exit 2; }
done
# The two fleet scenarios share one fleet when both are asked for.
if printf '%s\n' "${scenarios[@]}" | grep -qx bundle-server && printf '%s\n' "${scenarios[@]}" | grep -qx sigterm; then
    RUN[bundle-server]='^TestFaultFleet$'
    mapfile -t scenarios < <(printf "%s\n" "${scenarios[@]}" | grep -vx sigterm)
fi

echo "faults.sh: building acgs into $out"
go build -o "$out/acgs" ./cmd/acgs
export ACGS_FAULTS=1 ACGS_BIN="$out/acgs" ACGS_FAULTS_OUT="$out" ACGS_REQUIRE_SERVICES=1
{
    echo "machine: nproc $(nproc), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (shared machine)"
} | tee "$out/machine.txt"

failed=()
for s in "${scenarios[@]}"; do
    echo
    echo "==> $s"
    extra=()
    [[ "$s" == soak ]] && extra=(env ACGS_FAULTS_SOAK=1)
    if ! "${extra[@]}" go test -count=1 -v -timeout 40m -run "${RUN[$s]}" ./internal/faults >"$out/$s.log" 2>&1; then
        failed+=("$s")
        tail -40 "$out/$s.log"
    else
        grep -E '^(---|ok|PASS|FAIL)' "$out/$s.log" || true
    fi
done

echo
for md in "$out"/*.md; do
    [[ -f "$md" ]] && { cat "$md"; echo; }
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
echo "reports: $out"
if ((${#failed[@]})); then
    echo "faults.sh: FAILED: ${failed[*]}"
    exit 1
fi
echo "faults.sh: all scenarios passed"
