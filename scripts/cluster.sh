#!/usr/bin/env bash
# The production topology without Docker, from the binary and Debian packages,
# all on loopback: three acgs instances sharing Redis (or a 3-master Redis
# Cluster) and taking their constitution from a bundle server with signature
# verification, nginx in front, Prometheus scraping all three.
#
#   scripts/cluster.sh up [--cluster]    build bin/acgs, start everything, wait until it is healthy
#   scripts/cluster.sh down              stop everything `up` started (by recorded pid)
#   scripts/cluster.sh status            health of each part; exit 1 if any is down
#   scripts/cluster.sh publish [--revision R] [--constitutional-hash H]
#                          [--signing-key FILE | --bad-signature | --unsigned]
#                                        build policies/ as a new bundle on the bundle server
#
# Ports (CLUSTER_BASE_PORT, default 18100):
#   nginx          base       (deploy/nginx/nginx.conf with its "cluster.sh:" lines rewritten)
#   acgs           base+1..3  CONFIG_FILE: OPA configuration polling the bundle server
#   Redis          base+79    (--cluster: masters on base+71..73, bus ports +10000)
#   bundle server  base+80    acgs bundle serve RUN/bundles
#   Prometheus     base+90    scrapes the three instances, loads deploy/prometheus/alerts.yml
# State lives in CLUSTER_DIR (default .cluster, git-ignored): configuration,
# the generated signing key, secrets, logs and pids. `up` when everything is
# already running only reports status; a partial run is stopped first.
#
# Other settings: CLUSTER_POLL_MIN / CLUSTER_POLL_MAX (bundle polling, 1 / 2 s),
# CLUSTER_LONG_POLL (seconds; off by default), CLUSTER_WAIT (readiness bound,
# 90 s), CLUSTER_BIN (use this acgs binary instead of building bin/acgs),
# CLUSTER_L2_TIMEOUT (50ms) and CLUSTER_EVAL_TIMEOUT (1s): looser than the
# service defaults (2ms, 100ms) because seven processes share the machine's
# cores here, and a starved evaluation would fail closed; LOG_LEVEL (info).
set -euo pipefail
# Loopback traffic never goes through a proxy the environment may set
# (module downloads still may).
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="${CLUSTER_DIR:-$root/.cluster}"
base="${CLUSTER_BASE_PORT:-18100}"
poll_min="${CLUSTER_POLL_MIN:-1}"
poll_max="${CLUSTER_POLL_MAX:-2}"
long_poll="${CLUSTER_LONG_POLL:-}"
wait_s="${CLUSTER_WAIT:-90}"
l2_timeout="${CLUSTER_L2_TIMEOUT:-50ms}"
eval_timeout="${CLUSTER_EVAL_TIMEOUT:-1s}"
log_level="${LOG_LEVEL:-info}"

nginx_port=$base
acgs_ports=($((base + 1)) $((base + 2)) $((base + 3)))
redis_port=$((base + 79))
cluster_ports=($((base + 71)) $((base + 72)) $((base + 73)))
bundle_port=$((base + 80))
prom_port=$((base + 90))

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }
usage() { sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

need() {
    local bin=$1 pkg=$2
    command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] ||
        die "$bin is missing: apt-get install -y $pkg"
}
bin_path() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

acgs_bin() { echo "${CLUSTER_BIN:-$root/bin/acgs}"; }

# --- processes -----------------------------------------------------------------
# start NAME LOG CMD...: runs CMD detached (own session, stdin from /dev/null,
# output to LOG) and records "PID EXECUTABLE" in pids/NAME.
start() {
    local name=$1 log=$2
    shift 2
    setsid "$@" </dev/null >>"$log" 2>&1 &
    echo "$! $1" >"$run/pids/$name"
}

# alive NAME: the recorded process runs and is still the program we started
# (a recycled pid running something else does not count).
alive() {
    local f="$run/pids/$1" pid exe
    [[ -f "$f" ]] || return 1
    read -r pid exe <"$f"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(basename "$exe")"
}

# stop NAME: SIGTERM, up to 30s for a graceful exit, then SIGKILL.
stop() {
    local name=$1 f="$run/pids/$1" pid exe
    [[ -f "$f" ]] || return 0
    if alive "$name"; then
        read -r pid exe <"$f"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            alive "$name" || break
            sleep 0.1
        done
        if alive "$name"; then
            say "$name (pid $pid) ignored SIGTERM for 30s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

all_names() {
    local names=(redis redis-1 redis-2 redis-3 bundles acgs-1 acgs-2 acgs-3 nginx prometheus)
    echo "${names[@]}"
}

# wait_http URL [SECONDS]: until URL answers 2xx, bounded.
# wait_http URL [SECONDS] [NAME]: until URL answers 2xx; with NAME, give up
# at once when that process has exited (a port taken, a bad setting) rather
# than waiting out the limit.
wait_http() {
    local url=$1 limit=${2:-$wait_s} name=${3:-} i
    for ((i = 0; i < limit * 5; i++)); do
        curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        if [[ -n "$name" ]] && ! alive "$name"; then
            say "$name exited before it was ready"
            return 1
        fi
        sleep 0.2
    done
    return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- bundles -------------------------------------------------------------------
# publish builds policies/ (tests left out) into the bundle server's directory.
publish() {
    local revision chash="" key="$run/keys/bundle.key" signed=1
    revision="cluster-$(date -u +%Y%m%dT%H%M%S)-$$"
    while (($#)); do
        case "$1" in
            --revision) revision=${2:?--revision needs a value}; shift 2 ;;
            --constitutional-hash) chash=${2:?--constitutional-hash needs a value}; shift 2 ;;
            --signing-key) key=${2:?--signing-key needs a file}; shift 2 ;;
            --bad-signature)
                key="$run/keys/rogue.key"
                [[ -f "$key" ]] || openssl genrsa -out "$key" 2048 2>/dev/null
                shift ;;
            --unsigned) signed=0; shift ;;
            *) die "publish: unknown option $1" ;;
        esac
    done
    [[ -d "$run/bundles" ]] || die "no run directory at $run: run '$0 up' first"
    local stage
    stage="$(mktemp -d "$run/stage.XXXXXX")"
    cp -R "$root/policies/." "$stage/"
    rm -f "$stage/embed.go"
    if [[ -n "$chash" ]]; then
        sed -E -i "s/(\"constitutional_hash\"[[:space:]]*:[[:space:]]*\")[^\"]*\"/\1$chash\"/" "$stage/.manifest"
        grep -q "\"constitutional_hash\": *\"$chash\"" "$stage/.manifest" || die "could not set the constitutional hash in .manifest"
    fi
    local args=(bundle build "$stage" -o "$run/bundles/bundle.tar.gz" --revision "$revision" --ignore '*_test.rego')
    ((signed)) && args+=(--signing-key "$key")
    "$(acgs_bin)" "${args[@]}" >/dev/null || { rm -rf "$stage"; die "bundle build failed"; }
    rm -rf "$stage"
    echo "$revision" >"$run/bundles/REVISION"
    say "published revision $revision$( ((signed)) || echo ' (unsigned)')${chash:+ with constitutional hash $chash}"
}

# --- up ------------------------------------------------------------------------
up() {
    local redis_cluster=0
    while (($#)); do
        case "$1" in
            --cluster) redis_cluster=1; shift ;;
            *) die "up: unknown option $1" ;;
        esac
    done
    need redis-server redis-server
    need redis-cli redis-tools
    need nginx nginx
    need prometheus prometheus
    need promtool prometheus
    need openssl openssl
    need curl curl
    [[ -n "${CLUSTER_BIN:-}" ]] || need go golang

    mkdir -p "$run/pids"
    local n running=0 total=0
    for n in $(all_names); do
        [[ -f "$run/pids/$n" ]] || continue
        total=$((total + 1))
        alive "$n" && running=$((running + 1))
    done
    if ((total > 0 && running == total)); then
        say "already up ($run)"
        status
        return
    fi
    if ((total > 0)); then
        say "a previous run is partly up: stopping it first"
        down
        mkdir -p "$run/pids"
    fi
    local p
    for p in "$nginx_port" "${acgs_ports[@]}" "$bundle_port" "$prom_port" \
        $( ((redis_cluster)) && echo "${cluster_ports[@]}" $((cluster_ports[0] + 10000)) $((cluster_ports[1] + 10000)) $((cluster_ports[2] + 10000)) || echo "$redis_port"); do
        port_free "$p" || die "port $p is in use (set CLUSTER_BASE_PORT to move the whole topology)"
    done

    if [[ -z "${CLUSTER_BIN:-}" ]]; then
        say "building bin/acgs"
        (cd "$root" && go build -o bin/acgs ./cmd/acgs) || die "go build failed"
    fi
    [[ -x "$(acgs_bin)" ]] || die "$(acgs_bin) is not an executable"

    mkdir -p "$run"/{logs,keys,bundles,nginx,prometheus/data}
    rm -rf "$run"/redis "$run"/redis-*
    # Secrets and the signing key survive a down/up, so published bundles stay valid.
    if [[ ! -f "$run/secrets.env" ]]; then
        (
            umask 077
            printf 'REDIS_PASSWORD=%s\nCACHE_SIGNING_KEY=%s\nADMIN_TOKEN=%s\n' \
                "$(openssl rand -hex 16)" "$(openssl rand -hex 32)" "$(openssl rand -hex 16)" >"$run/secrets.env"
        )
    fi
    # shellcheck disable=SC1091
    source "$run/secrets.env"
    if [[ ! -f "$run/keys/bundle.key" ]]; then
        (umask 077 && openssl genrsa -out "$run/keys/bundle.key" 2048 2>/dev/null)
        openssl rsa -in "$run/keys/bundle.key" -pubout -out "$run/keys/bundle.pub" 2>/dev/null
        say "generated the bundle signing key $run/keys/bundle.key"
    fi

    # Redis, or a Redis Cluster of three masters.
    local redis_url
    if ((redis_cluster)); then
        local i addrs=()
        for i in 0 1 2; do
            mkdir -p "$run/redis-$((i + 1))"
            start "redis-$((i + 1))" "$run/logs/redis-$((i + 1)).log" "$(bin_path redis-server)" \
                --port "${cluster_ports[$i]}" --bind 127.0.0.1 --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
                --save "" --appendonly no --dir "$run/redis-$((i + 1))" \
                --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
            addrs+=("127.0.0.1:${cluster_ports[$i]}")
        done
        for i in 0 1 2; do
            for _ in $(seq 1 100); do
                REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p "${cluster_ports[$i]}" ping 2>/dev/null | grep -q PONG && break
                sleep 0.1
            done
        done
        REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
            >"$run/logs/redis-cluster-create.log" 2>&1 || die "redis-cli --cluster create failed: see $run/logs/redis-cluster-create.log"
        for i in 0 1 2; do
            local ok=0
            for _ in $(seq 1 $((wait_s * 5))); do
                if REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p "${cluster_ports[$i]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
                    ok=1
                    break
                fi
                sleep 0.2
            done
            ((ok)) || die "Redis Cluster node ${cluster_ports[$i]} not ok after ${wait_s}s"
        done
        # One seed node: the client discovers the others (CLUSTER SLOTS).
        redis_url="redis://:$REDIS_PASSWORD@127.0.0.1:${cluster_ports[0]}"
        say "Redis Cluster up: ${addrs[*]}"
    else
        mkdir -p "$run/redis"
        start redis "$run/logs/redis.log" "$(bin_path redis-server)" --port "$redis_port" --bind 127.0.0.1 \
            --requirepass "$REDIS_PASSWORD" --save "" --appendonly no --dir "$run/redis"
        local ok=0
        for _ in $(seq 1 $((wait_s * 5))); do
            REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && { ok=1; break; }
            sleep 0.2
        done
        ((ok)) || die "Redis did not answer within ${wait_s}s: see $run/logs/redis.log"
        redis_url="redis://:$REDIS_PASSWORD@127.0.0.1:$redis_port"
    fi
    echo "$redis_url" >"$run/redis-url"
    chmod 600 "$run/redis-url"

    # The bundle server with a signed bundle of policies/.
    publish --revision "${CLUSTER_REVISION:-cluster-initial}"
    start bundles "$run/logs/bundles.log" "$(acgs_bin)" bundle serve "$run/bundles" --addr "127.0.0.1:$bundle_port"
    wait_http "http://127.0.0.1:$bundle_port/bundle.tar.gz" || die "the bundle server did not start: see $run/logs/bundles.log"

    # The OPA configuration of the instances.
    {
        echo "# Written by scripts/cluster.sh: poll the local bundle server, require signatures."
        echo "services:"
        echo "  bundles:"
        echo "    url: http://127.0.0.1:$bundle_port"
        echo "keys:"
        echo "  constitution:"
        echo "    algorithm: RS256"
        echo "    key: |"
        sed 's/^/      /' "$run/keys/bundle.pub"
        echo "bundles:"
        echo "  acgs:"
        echo "    service: bundles"
        echo "    resource: bundle.tar.gz"
        echo "    polling:"
        echo "      min_delay_seconds: $poll_min"
        echo "      max_delay_seconds: $poll_max"
        [[ -n "$long_poll" ]] && echo "      long_polling_timeout_seconds: $long_poll"
        echo "    signing:"
        echo "      keyid: constitution"
    } >"$run/opa-config.yaml"

    # Three instances.
    for i in 0 1 2; do
        start "acgs-$((i + 1))" "$run/logs/acgs-$((i + 1)).log" env \
            HOST=127.0.0.1 PORT="${acgs_ports[$i]}" CONFIG_FILE="$run/opa-config.yaml" \
            REDIS_URL="$redis_url" CACHE_SIGNING_KEY="$CACHE_SIGNING_KEY" ADMIN_TOKEN="$ADMIN_TOKEN" \
            L2_TIMEOUT="$l2_timeout" EVAL_TIMEOUT="$eval_timeout" LOG_LEVEL="$log_level" LOG_FORMAT=json \
            "$(acgs_bin)" serve
        # `env` execs acgs: the recorded pid is the instance's, its executable acgs.
        echo "$(cut -d' ' -f1 "$run/pids/acgs-$((i + 1))") $(acgs_bin)" >"$run/pids/acgs-$((i + 1))"
    done
    for i in 0 1 2; do
        wait_http "http://127.0.0.1:${acgs_ports[$i]}/health/ready" "$wait_s" "acgs-$((i + 1))" ||
            die "acgs-$((i + 1)) not ready within ${wait_s}s: see $run/logs/acgs-$((i + 1)).log"
    done
    say "3 instances ready on ${acgs_ports[*]}"

    # nginx: the deployment's own configuration, marked lines rewritten.
    local servers="" p2
    for p2 in "${acgs_ports[@]}"; do
        servers+="        server 127.0.0.1:$p2 max_fails=3 fail_timeout=5s;\n"
    done
    awk -v pid="$run/nginx/nginx.pid" -v elog="$run/logs/nginx-error.log" -v alog="$run/logs/nginx-access.log" \
        -v listen="127.0.0.1:$nginx_port" -v servers="$servers" '
        /# cluster.sh: pid/          { print "pid " pid ";"; next }
        /# cluster.sh: error_log/    { print "error_log " elog " warn;"; next }
        /# cluster.sh: access_log/   { print "    access_log " alog " acgs;"; next }
        /# cluster.sh: upstream servers/ { printf "%s", servers; next }
        /# cluster.sh: listen/       { print "        listen " listen ";"; next }
        { print }' "$root/deploy/nginx/nginx.conf" >"$run/nginx/nginx.conf"
    [[ $(grep -c "server 127.0.0.1:" "$run/nginx/nginx.conf") == 3 ]] || die "rewriting deploy/nginx/nginx.conf failed"
    "$(bin_path nginx)" -t -q -e stderr -p "$run/nginx" -c "$run/nginx/nginx.conf" || die "nginx -t refuses the generated configuration"
    start nginx "$run/logs/nginx.log" "$(bin_path nginx)" -e stderr -p "$run/nginx" -c "$run/nginx/nginx.conf" -g "daemon off;"
    wait_http "http://127.0.0.1:$nginx_port/health/ready" || die "nginx not serving within ${wait_s}s: see $run/logs/nginx-error.log"

    # Prometheus scraping the three instances, with the deployment's rules.
    {
        echo "# Written by scripts/cluster.sh."
        echo "global:"
        echo "  scrape_interval: 2s"
        echo "  scrape_timeout: 1s"
        echo "  evaluation_interval: 5s"
        echo "rule_files:"
        echo "  - $root/deploy/prometheus/alerts.yml"
        echo "scrape_configs:"
        echo "  - job_name: acgs"
        echo "    metrics_path: /metrics"
        echo "    static_configs:"
        echo "      - targets: [\"127.0.0.1:${acgs_ports[0]}\", \"127.0.0.1:${acgs_ports[1]}\", \"127.0.0.1:${acgs_ports[2]}\"]"
        echo "        labels:"
        echo "          service: acgs-lite"
    } >"$run/prometheus/prometheus.yml"
    "$(bin_path promtool)" check config "$run/prometheus/prometheus.yml" >"$run/logs/promtool.log" 2>&1 ||
        die "promtool refuses the generated configuration: see $run/logs/promtool.log"
    start prometheus "$run/logs/prometheus.log" "$(bin_path prometheus)" \
        --config.file="$run/prometheus/prometheus.yml" --storage.tsdb.path="$run/prometheus/data" \
        --web.listen-address="127.0.0.1:$prom_port" --storage.tsdb.retention.time=1d
    wait_http "http://127.0.0.1:$prom_port/-/ready" || die "Prometheus not ready within ${wait_s}s: see $run/logs/prometheus.log"

    say "up: nginx http://127.0.0.1:$nginx_port, instances ${acgs_ports[*]}, bundles :$bundle_port, Prometheus :$prom_port (state in $run)"
}

# --- down ----------------------------------------------------------------------
down() {
    [[ -d "$run/pids" ]] || { say "nothing to stop ($run has no pids)"; return 0; }
    local n
    # Front to back: no request reaches an instance that is going away.
    for n in nginx prometheus acgs-1 acgs-2 acgs-3 bundles redis redis-1 redis-2 redis-3; do
        stop "$n"
    done
    say "down"
}

# --- status --------------------------------------------------------------------
status() {
    local bad=0 i url rev
    line() { printf '%-12s %-8s %s\n' "$1" "$2" "$3"; }
    if [[ ! -d "$run/pids" ]]; then
        say "not up ($run)"
        return 1
    fi
    for i in 1 2 3; do
        url="http://127.0.0.1:${acgs_ports[$((i - 1))]}"
        if alive "acgs-$i" && curl -fsS -o /dev/null --max-time 2 "$url/health/ready"; then
            rev="$(curl -fsS --max-time 2 "$url/v1/data/acgs/main/health" | grep -o '"policy_revision":"[^"]*"' | cut -d'"' -f4)"
            line "acgs-$i" ready "$url revision=$rev"
        else
            line "acgs-$i" DOWN "$url"
            bad=1
        fi
    done
    if alive nginx && curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$nginx_port/health/ready"; then
        line nginx ready "http://127.0.0.1:$nginx_port"
    else
        line nginx DOWN "http://127.0.0.1:$nginx_port"
        bad=1
    fi
    if alive bundles && curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$bundle_port/bundle.tar.gz"; then
        line bundles ready "http://127.0.0.1:$bundle_port/bundle.tar.gz revision=$(cat "$run/bundles/REVISION" 2>/dev/null)"
    else
        line bundles DOWN "http://127.0.0.1:$bundle_port"
        bad=1
    fi
    if alive prometheus && curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$prom_port/-/ready"; then
        line prometheus ready "http://127.0.0.1:$prom_port"
    else
        line prometheus DOWN "http://127.0.0.1:$prom_port"
        bad=1
    fi
    # shellcheck disable=SC1091
    [[ -f "$run/secrets.env" ]] && source "$run/secrets.env"
    local names=(redis) ports=("$redis_port")
    [[ -f "$run/pids/redis-1" ]] && names=(redis-1 redis-2 redis-3) ports=("${cluster_ports[@]}")
    for i in "${!names[@]}"; do
        if alive "${names[$i]}" && REDISCLI_AUTH="${REDIS_PASSWORD:-}" redis-cli -p "${ports[$i]}" ping 2>/dev/null | grep -q PONG; then
            line "${names[$i]}" ready "127.0.0.1:${ports[$i]}"
        else
            line "${names[$i]}" DOWN "127.0.0.1:${ports[$i]}"
            bad=1
        fi
    done
    return $bad
}

cmd="${1:-}"
shift || true
case "$cmd" in
    up) up "$@" ;;
    down) down ;;
    status) status ;;
    publish) publish "$@" ;;
    *) usage ;;
esac
