#!/usr/bin/env bash
# Runs the whole system in the foreground: migrations first, then every
# process. Ctrl-C (or SIGTERM) stops them all and waits for them to drain.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug
: "${RUST_LOG:=info}"
# The processes prove themselves to each other with tokens signed by this
# secret; a fresh one per run unless you bring your own.
: "${SERVICE_TOKEN_SECRET:=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export RUST_LOG SERVICE_TOKEN_SECRET

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

for service in auth content notification gateway; do
    "$bin/quill-$service" &
    pids+=("$!")
done

echo "Quill is starting: REST on http://127.0.0.1:8080/api, gRPC on 50051-50053. Ctrl-C stops it." >&2
# If any process exits on its own, stop the rest rather than run half a system.
wait -n "${pids[@]}" || true
stop
