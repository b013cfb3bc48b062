#!/usr/bin/env bash
# `just bench-versus`: Quill beside another RealWorld implementation, on one
# machine in one run, so that a ratio between them never mixes two days'
# machines. Rounds alternate, each on a fresh system and database: the other
# implementation, Quill, then Quill, the other, ... (ROUNDS of each), every
# one loaded by the shared bench/realworld-load.sh; then a Markdown table per
# endpoint: both sides' req/s, p99 and CPU per request over the rounds, and
# Quill's ratio of the means.
#
# Environment:
#   VERSUS_START  (required) a command that starts a fresh instance of the
#                 other implementation on a database of its own, waits until
#                 it answers, and prints its process ids (space-separated) on
#                 the last line of its output; they get SIGTERM after its
#                 round (SIGKILL 30 s later), or when this script stops.
#                 Its database must be on the PostgreSQL at PG_PORT [5432],
#                 whose CPU the load script samples.
#   VERSUS_URL    its API base [http://127.0.0.1:8080/api]
#   VERSUS_NAME   what the table calls it [other]; letters, digits, . _ -
#   ROUNDS        rounds of each side [2]; an even number lets each side go
#                 first as often as the other
# and whatever bench/rest-load.sh (Quill's rounds) and bench/realworld-load.sh
# read; DURATION defaults to 10s here.
#
# No implementation but Quill is built or fetched here: bring the other one
# yourself (bench/README.md, the tenth pass, says how the monolith issue 12
# names was run).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VERSUS_START:?set VERSUS_START to a command that starts the other implementation and prints its pids}"
url="${VERSUS_URL:-http://127.0.0.1:8080/api}"
name="${VERSUS_NAME:-other}"
rounds="${ROUNDS:-2}"
export DURATION="${DURATION:-10s}"
[[ $name =~ ^[A-Za-z0-9._-]+$ ]] || { echo "VERSUS_NAME may hold letters, digits, . _ - only" >&2; exit 2; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number" >&2; exit 2; }

dir="target/bench-versus/$(date +%s)_$$"
mkdir -p "$dir"

# The other implementation's processes while a round of it runs.
pids=()
stop_other() {
    ((${#pids[@]})) || return 0
    kill "${pids[@]}" 2>/dev/null || true
    local pid waited
    for pid in "${pids[@]}"; do
        for ((waited = 0; waited < 150; waited++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    pids=()
}
trap stop_other EXIT

other_round() { # $1 round number
    # Its output goes to a file: a server it starts in the background may
    # keep a pipe open for as long as it runs.
    local started="$dir/$name-$1.start"
    if ! bash -c "$VERSUS_START" >"$started"; then
        echo "VERSUS_START failed; its output is in $started" >&2
        exit 1
    fi
    read -ra pids < <(tail -n 1 "$started")
    if ((${#pids[@]} == 0)) || [[ ! "${pids[*]}" =~ ^[0-9\ ]+$ ]]; then
        echo "VERSUS_START printed no pids on its last line; its output is in $started" >&2
        pids=()
        exit 1
    fi
    SERVER_PIDS="${pids[*]}" RESULTS_TSV="$dir/$name-$1.tsv" bench/realworld-load.sh "$url" \
        >"$dir/$name-$1.out" || { echo "the load failed; see $dir/$name-$1.out" >&2; exit 1; }
    stop_other
}

quill_round() { # $1 round number
    BENCH_REST_DIR="$dir/quill-$1" bench/rest-load.sh >"$dir/quill-$1.out" \
        || { echo "the load failed; see $dir/quill-$1.out" >&2; exit 1; }
}

for ((i = 1; i <= rounds; i++)); do
    if ((i % 2)); then
        echo "round $i: $name, then Quill" >&2
        other_round "$i"
        quill_round "$i"
    else
        echo "round $i: Quill, then $name" >&2
        quill_round "$i"
        other_round "$i"
    fi
done

echo
echo "## Quill beside $name: $rounds rounds each, alternating, on $(nproc) cores"
echo
echo "wrk -t${THREADS:-2} -c${CONNS:-32}, $DURATION per endpoint after a ${WARMUP:-2s} warm-up; fresh systems every round."
python3 bench/versus_report.py "$name" "$dir"
