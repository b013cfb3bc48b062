#!/usr/bin/env bash
# Runs the official RealWorld Postman collection with newman against the whole
# system, started here on free ports with its own databases and Redis prefix
# (so it never collides with a running `just up`), and tears it all down.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x node_modules/.bin/newman ] || npm ci --no-audit --no-fund --loglevel=error

run="e2e_$(date +%s)_$$"
logs="target/e2e/$run"
mkdir -p "$logs"
# Free ports below the kernel's ephemeral range, which outgoing connections
# (and tests binding port 0) draw from while our processes start.
read -r auth_port content_port notification_port gateway_port < <(python3 -c '
import random, socket
ports = []
while len(ports) < 4:
    port = random.randrange(20000, 32000)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    if port not in ports:
        ports.append(port)
print(*ports)
')

pg="postgres://postgres@127.0.0.1:5432"
export AUTH_LISTEN="127.0.0.1:$auth_port" CONTENT_LISTEN="127.0.0.1:$content_port"
export NOTIFICATION_LISTEN="127.0.0.1:$notification_port" GATEWAY_LISTEN="127.0.0.1:$gateway_port"
export AUTH_URL="http://$AUTH_LISTEN" CONTENT_URL="http://$CONTENT_LISTEN" NOTIFICATION_URL="http://$NOTIFICATION_LISTEN"
export AUTH_DATABASE_URL="$pg/quill_auth_$run" CONTENT_DATABASE_URL="$pg/quill_content_$run"
export NOTIFICATION_DATABASE_URL="$pg/quill_notification_$run"
export REDIS_PREFIX="$run:" RUST_LOG="${RUST_LOG:-info}"
SERVICE_TOKEN_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SERVICE_TOKEN_SECRET
# No admin metrics ports: the suite does not scrape, and fixed ones would
# collide with a running stack.
export METRICS_LISTEN="" GATEWAY_METRICS_LISTEN=""
# A vhost of its own: its exchange and queues never meet a running `just up`'s.
export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$run"

pids=()
cleanup() {
    [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    for db in auth content notification; do
        PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS quill_${db}_$run WITH (FORCE)" || true
    done
    rabbitmqctl -q delete_vhost "$run" >/dev/null 2>&1 || true
    redis-cli -h 127.0.0.1 --scan --pattern "$run:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
}
trap cleanup EXIT
rabbitmqctl -q add_vhost "$run" >/dev/null
rabbitmqctl -q set_permissions -p "$run" guest '.*' '.*' '.*' >/dev/null

for service in auth content notification gateway; do
    "target/debug/quill-$service" >"$logs/$service.log" 2>&1 &
    pids+=("$!")
done

for _ in $(seq 1 120); do
    curl -fs "http://$GATEWAY_LISTEN/readyz" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fs "http://$GATEWAY_LISTEN/readyz" || { echo "system did not become ready; logs in $logs" >&2; exit 1; }
echo

node_modules/.bin/newman run e2e/Conduit.postman_collection.json \
    --global-var "APIURL=http://$GATEWAY_LISTEN/api" \
    --global-var "USERNAME=u$run" \
    --global-var "EMAIL=$run@example.com" \
    --global-var "PASSWORD=pw-$run" \
    --reporter-cli-no-console \
    --bail
