#!/usr/bin/env bash
# Runs the whole system in the foreground: migrations first, then every
# process. Ctrl-C (or SIGTERM) stops them all and waits for them to drain.
#
# `scripts/up.sh N` runs N replicas of auth, content and notification (gRPC
# ports 50051/50052/50053 + 10*i, metrics 9101-9103 + 10*i) behind one
# gateway on :8080; every caller balances over the replicas' list of URLs.
set -euo pipefail
cd "$(dirname "$0")/.."

replicas=${1:-1}
[[ $replicas =~ ^[1-9]$ ]] || { echo "replicas: 1 to 9" >&2; exit 2; }

bin=target/debug
: "${RUST_LOG:=info}"
# The processes prove themselves to each other with tokens signed by this
# secret; a fresh one per run unless you bring your own.
: "${SERVICE_TOKEN_SECRET:=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export RUST_LOG SERVICE_TOKEN_SECRET
# Replicas must agree on what one replica signed: one JWT key for every auth
# replica, one cursor key for every content replica (else each makes its own).
if [[ -z ${AUTH_JWT_PRIVATE_KEY:-}${AUTH_JWT_PRIVATE_KEY_FILE:-} ]]; then
    AUTH_JWT_PRIVATE_KEY=$(openssl genpkey -algorithm ed25519)
    export AUTH_JWT_PRIVATE_KEY
fi
: "${CONTENT_CURSOR_SECRET:=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export CONTENT_CURSOR_SECRET

"$bin/quill-auth" migrate
"$bin/quill-content" migrate
"$bin/quill-notification" migrate

pids=()
stop() {
    trap - INT TERM
    echo "stopping ${#pids[@]} processes..." >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

# The URL list of each service's replicas: http://127.0.0.1:<port + 10*i>.
urls() {
    local port=$1 list=() i
    for ((i = 0; i < replicas; i++)); do list+=("http://127.0.0.1:$((port + 10 * i))"); done
    (IFS=,; echo "${list[*]}")
}
export AUTH_URL=$(urls 50051) CONTENT_URL=$(urls 50052) NOTIFICATION_URL=$(urls 50053)

for ((i = 0; i < replicas; i++)); do
    for service in auth content notification; do
        case $service in
            auth) port=50051 metrics=9101 ;;
            content) port=50052 metrics=9102 ;;
            notification) port=50053 metrics=9103 ;;
        esac
        upper=${service^^}
        env "${upper}_LISTEN=127.0.0.1:$((port + 10 * i))" \
            "METRICS_LISTEN=127.0.0.1:$((metrics + 10 * i))" \
            "$bin/quill-$service" &
        pids+=("$!")
    done
done
"$bin/quill-gateway" &
pids+=("$!")

echo "Quill is starting ($replicas replica(s) per service): REST on http://127.0.0.1:8080/api, gRPC on 50051-50053 (+10 per replica). Ctrl-C stops it." >&2
# If any process exits on its own, stop the rest rather than run half a system.
wait -n "${pids[@]}" || true
stop
