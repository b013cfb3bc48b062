#!/usr/bin/env bash
# `just bench-cpu`: where a request's CPU goes. Starts the four release
# processes on databases, a RabbitMQ vhost and a Redis prefix of their own
# (scripts/isolated-system.sh), loads one endpoint with the shared load script
# (bench/realworld-load.sh, ONLY=create_article unless set; a comma list
# gives a column each), and prints the milliseconds of CPU per request spent by each Quill process, by PostgreSQL
# per database (its backends for that database) and in its background
# processes, by Redis and by RabbitMQ, and the MultiXacts PostgreSQL created
# per request (shared row locks taken by more than one transaction at once).
#
# The window runs from just before the endpoint's warm-up to the end of its
# run and the load script's settling second after it; requests are counted
# in it from the gateway's access log (RUST_LOG must keep tower_http's INFO
# lines, as the default does), so both sides of the division cover the same
# time. CPU comes from /proc/<pid>/stat, per process: a PostgreSQL backend
# that ends inside the window takes its share with it.
# Redis and RabbitMQ are shared with whatever else runs on the machine: run
# it on an otherwise idle one.
#
# Environment: what bench/realworld-load.sh reads (ONLY, DURATION [10s], ...)
# BENCH_CPU_DIR (where the snapshots and logs go; target/bench-cpu/<run>) and
# BENCH_BIN (a directory of release binaries to run instead of building this
# tree's: a saved build, for runs alternating two versions).
set -euo pipefail
cd "$(dirname "$0")/.."

# `cpu-split.sh snapshot RUN FILE LOG PID...`: one snapshot, appended to FILE
# (the load script runs it before the endpoint through BETWEEN_CMD).
if [[ "${1:-}" == snapshot ]]; then
    run=$2 out=$3 log=$4
    shift 4
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
    # One line per process: "<component> <pid> <ticks>", so that the
    # report subtracts each process's own earlier reading.
    each() {
        local component=$1 pid
        shift
        for pid in "$@"; do [[ -n $pid ]] && echo "$component $pid $(ticks "$pid")"; done
        return 0
    }
    sql() { psql -qAtX -U postgres -h 127.0.0.1 -d postgres -c "$1"; }
    {
        echo "at $(date +%s.%N)"
        echo "requests $(grep -c '"finished processing request"' "$log" || true)"
        names=(auth content notification gateway)
        i=0
        for pid in "$@"; do each "${names[$i]}" "$pid"; i=$((i + 1)); done
        for service in auth content notification; do
            # shellcheck disable=SC2046 # one pid per word
            each "postgres:$service" $(sql "SELECT pid FROM pg_stat_activity
                WHERE datname = 'quill_${service}_$run' AND backend_type = 'client backend'")
        done
        # Autovacuum, the WAL writer, the checkpointer: for every database.
        # shellcheck disable=SC2046
        each postgres:background $(sql "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'")
        each redis "$(pgrep -x redis-server | head -1)"
        each rabbitmq "$(pgrep -f beam.smp | head -1)"
        # How far the cluster's next MultiXact id moved: mxid_age of a fixed point.
        echo "multixacts $(sql "SELECT mxid_age(datminmxid) FROM pg_database WHERE datname = 'template0'")"
    } >>"$out"
    exit 0
fi

source scripts/isolated-system.sh

bin="${BENCH_BIN:-target/release}"
[[ -n ${BENCH_BIN:-} ]] || cargo build --release --bins

run="cpu_$(date +%s)_$$"
dir="${BENCH_CPU_DIR:-target/bench-cpu/$run}"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# As bench/rest-load.sh: the load script registers every user from one
# address and writes far past a user's budget.
for limit in RATE_LIMIT_REGISTER_PER_IP RATE_LIMIT_LOGIN_FAILURES_PER_CLIENT \
    RATE_LIMIT_LOGIN_FAILURES_PER_IP RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT RATE_LIMIT_WRITES_PER_USER; do
    export "$limit=1000000000"
done

system_configure "$run"
system_start "$bin" "$dir"
system_wait_ready >/dev/null || { echo "system did not become ready; logs in $dir" >&2; exit 1; }

snapshot=("$PWD/bench/cpu-split.sh" snapshot "$run" "$dir/snapshots" "$dir/gateway.log" "${SYSTEM_PIDS[@]}")
export ONLY="${ONLY:-create_article}" DURATION="${DURATION:-10s}"
BETWEEN_CMD=$(printf '%q ' "${snapshot[@]}")
export BETWEEN_CMD SERVER_PIDS="${SYSTEM_PIDS[*]}"
bench/realworld-load.sh "http://$GATEWAY_LISTEN/api" | tee "$dir/load.out"
"${snapshot[@]}"
system_stop

# In the order the load script ran them, which is its own, not ONLY's.
ran=$(awk '/^endpoint /{table = 1; next} /^#/{table = 0} table {print $1}' "$dir/load.out" | paste -sd' ')
echo
echo "## CPU per request: ${ran// /, }; release build, $(nproc) cores"
echo
python3 bench/cpu_split.py "$dir/snapshots" "$(getconf CLK_TCK)" "$ran"
