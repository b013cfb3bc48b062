#!/usr/bin/env bash
# `just bench-rest`: the REST API under load as it is deployed, four release
# processes (auth, content, notification, gateway) on databases, a RabbitMQ
# vhost and a Redis prefix of their own (scripts/isolated-system.sh), loaded
# by the shared RealWorld load script (bench/realworld-load.sh, with wrk).
# Prints a Markdown table per endpoint (req/s, p50, p99, non-2xx), each
# process's RSS, how long seeding took, and what the processes logged above
# INFO; everything is stopped and dropped at the end, on failure or Ctrl-C too.
#
# Environment: whatever bench/realworld-load.sh reads, with its defaults
# (DURATION 15s, WARMUP 2s, THREADS 2, CONNS 32, USERS 50, ONLY, ...; see its
# header), RUST_LOG (info, as `just up` and the deployments run) and
# BENCH_REST_DIR (where the run's rows, RSS and logs go; target/bench-rest/<run>).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/isolated-system.sh

if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

cargo build --release --bins

run="bench_$(date +%s)_$$"
dir="${BENCH_REST_DIR:-target/bench-rest/$run}"
mkdir -p "$dir"
started=$SECONDS

# The load script registers every user from one address and writes far past
# a user's budget: lift the limits, or it measures 429s. Each is u32.
lifted=(
    RATE_LIMIT_REGISTER_PER_IP
    RATE_LIMIT_LOGIN_FAILURES_PER_CLIENT
    RATE_LIMIT_LOGIN_FAILURES_PER_IP
    RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT
    RATE_LIMIT_WRITES_PER_USER
)
for limit in "${lifted[@]}"; do export "$limit=1000000000"; done

system_configure "$run"
system_start target/release "$dir"
system_wait_ready >/dev/null || { echo "system did not become ready; logs in $dir" >&2; exit 1; }

# One line per snapshot: each process's VmRSS (or VmHWM, the peak) in KiB,
# in SYSTEM_NAMES order.
snapshot() { # $1 VmRSS or VmHWM
    local pid
    for pid in "${SYSTEM_PIDS[@]}"; do awk -v key="$1:" '$1 == key {print $2}' "/proc/$pid/status"; done | paste -sd' '
}
snapshot VmRSS >"$dir/rss-started"

# The load script runs BETWEEN_CMD before each endpoint: the first time,
# seeding is done and no load has started yet.
seeded_rss="[ -s $dir/rss-seeded ] || for p in ${SYSTEM_PIDS[*]}; do awk '\$1 == \"VmRSS:\" {print \$2}' /proc/\$p/status; done | paste -sd' ' >$dir/rss-seeded"
export BETWEEN_CMD="$seeded_rss${BETWEEN_CMD:+; $BETWEEN_CMD}"
export SERVER_PIDS="${SYSTEM_PIDS[*]}" RESULTS_TSV="$dir/results.tsv"
# In a process group of its own, which Ctrl-C here ends at once: its seeding
# threads would otherwise go on retrying against stopped processes.
# shellcheck disable=SC2016 # the inner shell expands them
setsid bash -o pipefail -c '"$0" "$1" | tee "$2"' \
    bench/realworld-load.sh "http://$GATEWAY_LISTEN/api" "$dir/load.out" &
load=$!
trap 'kill -TERM -- "-$load" 2>/dev/null || true; system_teardown' EXIT
wait "$load" || { echo "the load script failed; the processes' logs are in $dir" >&2; exit 1; }
trap system_teardown EXIT

snapshot VmRSS >"$dir/rss-loaded"
snapshot VmHWM >"$dir/rss-peak"
system_stop

echo
echo "## REST load: release build, one process per service, $(nproc) cores"
echo
echo "wrk -t${THREADS:-2} -c${CONNS:-32}, ${DURATION:-15s} per endpoint after a ${WARMUP:-2s} warm-up;" \
    "RUST_LOG=$RUST_LOG; rate limits lifted for the bench (${lifted[*]} = 1000000000)."
python3 bench/rest_report.py "$dir" "${SYSTEM_NAMES[@]}"
# The gateway logs every request at INFO: about 100 MB per run, 10 MB gzipped.
gzip -1 "$dir"/*.log
echo
echo "Took $((SECONDS - started)) s after the build. The processes' logs (gzipped): $dir"
