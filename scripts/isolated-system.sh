# shellcheck shell=bash
# Sourced, not run. The whole system as four separate processes on free
# loopback ports, with databases, a RabbitMQ vhost and a Redis key prefix of
# its own, so it never meets a running `just up` (or another copy of itself).
# scripts/e2e-postman.sh and bench/rest-load.sh start Quill this way.
#
#   system_configure NAME  exports every process's settings for a system
#                          called NAME (databases quill_<service>_NAME, vhost
#                          NAME, Redis prefix NAME:), creates its vhost, and
#                          traps EXIT (and INT, TERM) to tear it all down
#   system_start BIN LOGS  starts auth, content, notification and the gateway
#                          from the directory BIN, each writing LOGS/<name>.log;
#                          SYSTEM_NAMES and SYSTEM_PIDS list them in that order
#   system_wait_ready      waits (60 s at most) for the gateway's /readyz
#   system_stop            SIGTERM and wait, gateway first (30 s, then SIGKILL)
#   system_teardown        system_stop, then drops the databases, vhost and keys
#
# Settings exported before system_start (RUST_LOG, rate limits) reach every
# process. Metrics listeners are off: fixed ports would collide with `just up`.

SYSTEM_NAMES=(auth content notification gateway)
SYSTEM_PIDS=()
SYSTEM_RUN=""

system_configure() {
    SYSTEM_RUN=$1
    # Free ports below the kernel's ephemeral range, which outgoing
    # connections (and tests binding port 0) draw from while the processes start.
    local auth_port content_port notification_port gateway_port
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
    local pg="postgres://postgres@127.0.0.1:5432"
    export AUTH_LISTEN="127.0.0.1:$auth_port" CONTENT_LISTEN="127.0.0.1:$content_port"
    export NOTIFICATION_LISTEN="127.0.0.1:$notification_port" GATEWAY_LISTEN="127.0.0.1:$gateway_port"
    export AUTH_URL="http://$AUTH_LISTEN" CONTENT_URL="http://$CONTENT_LISTEN" NOTIFICATION_URL="http://$NOTIFICATION_LISTEN"
    export AUTH_DATABASE_URL="$pg/quill_auth_$SYSTEM_RUN" CONTENT_DATABASE_URL="$pg/quill_content_$SYSTEM_RUN"
    export NOTIFICATION_DATABASE_URL="$pg/quill_notification_$SYSTEM_RUN"
    export REDIS_PREFIX="$SYSTEM_RUN:" RUST_LOG="${RUST_LOG:-info}"
    SERVICE_TOKEN_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    export SERVICE_TOKEN_SECRET
    # Keys of their own rather than ones each process makes up with a warning.
    AUTH_JWT_PRIVATE_KEY="$(openssl genpkey -algorithm ed25519)"
    CONTENT_CURSOR_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    export AUTH_JWT_PRIVATE_KEY CONTENT_CURSOR_SECRET
    export METRICS_LISTEN="" GATEWAY_METRICS_LISTEN=""
    # A vhost of its own: its exchange and queues never meet a running `just up`'s.
    export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$SYSTEM_RUN"

    trap system_teardown EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    rabbitmqctl -q add_vhost "$SYSTEM_RUN" >/dev/null
    rabbitmqctl -q set_permissions -p "$SYSTEM_RUN" guest '.*' '.*' '.*' >/dev/null
}

system_start() {
    local bin=$1 logs=$2 name
    for name in "${SYSTEM_NAMES[@]}"; do
        "$bin/quill-$name" >"$logs/$name.log" 2>&1 &
        SYSTEM_PIDS+=("$!")
    done
}

system_wait_ready() {
    local _
    for _ in $(seq 1 120); do
        curl -fs "http://$GATEWAY_LISTEN/readyz" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    curl -fs "http://$GATEWAY_LISTEN/readyz"
}

system_stop() {
    [ ${#SYSTEM_PIDS[@]} -gt 0 ] || return 0
    # A bounded drain: whatever still runs after 30 s is killed.
    (sleep 30 && kill -KILL "${SYSTEM_PIDS[@]}") >/dev/null 2>&1 &
    local watchdog=$! i
    # Callers before what they call (gateway, notification, content, auth),
    # so no consumer finds a service it needs already gone.
    for ((i = ${#SYSTEM_PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${SYSTEM_PIDS[i]}" 2>/dev/null || true
        wait "${SYSTEM_PIDS[i]}" 2>/dev/null || true
    done
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
    SYSTEM_PIDS=()
}

system_teardown() {
    system_stop
    [ -n "$SYSTEM_RUN" ] || return 0
    local db
    for db in auth content notification; do
        PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS quill_${db}_$SYSTEM_RUN WITH (FORCE)" || true
    done
    rabbitmqctl -q delete_vhost "$SYSTEM_RUN" >/dev/null 2>&1 || true
    redis-cli -h 127.0.0.1 --scan --pattern "$SYSTEM_RUN:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
    SYSTEM_RUN=""
}
