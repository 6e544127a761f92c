#!/usr/bin/env bash
# Deploy ACGS-1 Lite with Docker Compose or to Kubernetes, after checking
# what can be checked first.
#
#   deploy/deploy.sh compose up [--prod]     build and start (docker-compose.yml, or the 3-replica fleet)
#   deploy/deploy.sh compose down [--prod]   stop and remove the containers (volumes are kept)
#   deploy/deploy.sh compose status [--prod]
#   deploy/deploy.sh k8s up                  kubectl apply -k deploy/k8s, then wait for the rollout
#   deploy/deploy.sh k8s down                kubectl delete -k deploy/k8s
#   deploy/deploy.sh k8s status
#   deploy/deploy.sh check                   the static checks only (no Docker, no cluster needed)
#
# Compose secrets live in deploy/.env (git-ignored); the first `compose up`
# writes one with fresh random values. Kubernetes needs the Secret
# acgs-secrets (see deploy/k8s/kustomization.yaml) and a real bundle
# public key in deploy/k8s/configmap.yaml; `k8s up` refuses without them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
env_file="$here/.env"
rollout_timeout="${ROLLOUT_TIMEOUT:-180s}"

die() { echo "deploy.sh: $*" >&2; exit 1; }
say() { echo "deploy.sh: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

# static_checks runs the checks that need neither Docker nor a cluster: the
# same ones the Go test suite runs on these files (go test ./deploy).
static_checks() {
    need go "the Go toolchain runs the deploy checks"
    say "checking the deployment files (go test ./deploy)"
    (cd "$root" && go test -count=1 ./deploy) || die "deployment files do not pass their checks"
}

# ensure_env writes deploy/.env with random secrets when it is missing, and
# checks that an existing one sets every variable the compose files require.
ensure_env() {
    if [[ ! -f "$env_file" ]]; then
        need openssl "to generate secrets"
        umask 077
        cat >"$env_file" <<EOF
# Written by deploy/deploy.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Keep it out of git.
REDIS_PASSWORD=$(openssl rand -hex 24)
CACHE_SIGNING_KEY=$(openssl rand -hex 32)
ADMIN_TOKEN=$(openssl rand -hex 24)
GRAFANA_ADMIN_PASSWORD=$(openssl rand -hex 16)
EOF
        say "wrote $env_file with fresh secrets"
    fi
    local v
    for v in REDIS_PASSWORD CACHE_SIGNING_KEY GRAFANA_ADMIN_PASSWORD; do
        grep -Eq "^${v}=.+" "$env_file" || die "$env_file does not set $v"
    done
    local key
    key="$(grep -E '^CACHE_SIGNING_KEY=' "$env_file" | cut -d= -f2-)"
    ((${#key} >= 32)) || die "CACHE_SIGNING_KEY in $env_file is shorter than 32 bytes"
}

compose() {
    local action="${1:-}"; shift || true
    local file="$here/docker-compose.yml"
    [[ "${1:-}" == "--prod" ]] && file="$here/docker-compose.prod.yml"
    need docker "Docker with the compose plugin"
    docker compose version >/dev/null 2>&1 || die "the docker compose plugin is required"
    local dc=(docker compose -f "$file" --env-file "$env_file")
    case "$action" in
        up)
            ensure_env
            "${dc[@]}" config --quiet || die "$file does not validate"
            "${dc[@]}" up -d --build --wait --wait-timeout 180
            "${dc[@]}" ps
            local port=8004
            say "checking http://127.0.0.1:$port/health/ready"
            for _ in $(seq 1 30); do
                if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then
                    say "ready: http://127.0.0.1:$port (Prometheus :9090, Grafana :3000)"
                    return 0
                fi
                sleep 2
            done
            die "the service did not become ready within 60s; see: ${dc[*]} logs acgs"
            ;;
        down)
            [[ -f "$env_file" ]] || die "$env_file is missing: nothing was deployed from here"
            "${dc[@]}" down --remove-orphans
            ;;
        status)
            [[ -f "$env_file" ]] || die "$env_file is missing: nothing was deployed from here"
            "${dc[@]}" ps
            ;;
        *) usage ;;
    esac
}

k8s() {
    local action="${1:-}"
    need kubectl "kubectl configured for the target cluster"
    local ns=acgs
    case "$action" in
        up)
            if grep -q 'REPLACE-WITH-THE-BUNDLE-SIGNING-PUBLIC-KEY-PEM' "$here/k8s/configmap.yaml"; then
                die "deploy/k8s/configmap.yaml still holds the placeholder public key: put the PEM of your bundle signing key there"
            fi
            kubectl kustomize "$here/k8s" >/dev/null || die "deploy/k8s does not build with kustomize"
            # The Secret comes first (and with it the namespace): pods cannot start without it.
            kubectl -n "$ns" get secret acgs-secrets >/dev/null 2>&1 ||
                die "secret $ns/acgs-secrets is missing (REDIS_URL, CACHE_SIGNING_KEY, ADMIN_TOKEN): create the namespace and the secret as deploy/k8s/kustomization.yaml shows"
            kubectl apply -k "$here/k8s" --dry-run=server >/dev/null || die "the cluster refuses deploy/k8s (server-side dry run)"
            kubectl apply -k "$here/k8s"
            kubectl -n "$ns" rollout status deployment/acgs --timeout="$rollout_timeout"
            kubectl -n "$ns" get pods -l app.kubernetes.io/name=acgs -o wide
            ;;
        down)
            kubectl delete -k "$here/k8s" --ignore-not-found
            ;;
        status)
            kubectl -n "$ns" get deployment,pods,hpa,pdb -l app.kubernetes.io/name=acgs
            ;;
        *) usage ;;
    esac
}

case "${1:-}" in
    compose) shift; [[ "${1:-}" == "up" ]] && static_checks; compose "$@" ;;
    k8s) shift; [[ "${1:-}" == "up" ]] && static_checks; k8s "$@" ;;
    check) static_checks ;;
    *) usage ;;
esac
