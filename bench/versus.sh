#!/usr/bin/env bash
# `just bench-versus`: Quill beside another RealWorld implementation, on one
# machine in one run, so that a ratio between them never mixes two days'
# machines. Rounds alternate, each on a fresh system and database: the other
# implementation, Quill, Quill, the other, ... (ROUNDS of each), every one
# loaded by the shared bench/realworld-load.sh; then a Markdown table per
# endpoint: both sides' req/s and p99 over the rounds and Quill's ratio of
# the means.
#
# Environment:
#   VERSUS_START  (required) a command that starts a fresh instance of the
#                 other implementation on a database of its own, waits until
#                 it answers, and prints its process ids (space-separated) on
#                 its last line of output; they get SIGTERM after its round.
#   VERSUS_URL    its API base [http://127.0.0.1:8080/api]
#   VERSUS_NAME   what the table calls it [other]
#   ROUNDS        rounds of each side [2]
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

dir="target/bench-versus/$(date +%s)_$$"
mkdir -p "$dir"

other_round() { # $1 round number
    local started pids
    started=$(bash -c "$VERSUS_START" | tail -n 1)
    [[ $started =~ ^[0-9\ ]+$ ]] || { echo "VERSUS_START printed no pids: '$started'" >&2; exit 1; }
    read -ra pids <<<"$started"
    SERVER_PIDS="${pids[*]}" RESULTS_TSV="$dir/$name-$1.tsv" bench/realworld-load.sh "$url" \
        >"$dir/$name-$1.out" || { echo "the load failed; see $dir/$name-$1.out" >&2; kill "${pids[@]}"; exit 1; }
    kill "${pids[@]}"
    local pid
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    done
}

quill_round() { # $1 round number
    BENCH_REST_DIR="$dir/quill-$1" bench/rest-load.sh >"$dir/quill-$1.out" \
        || { echo "the load failed; see $dir/quill-$1.out" >&2; exit 1; }
}

# other, Quill, Quill, other, other, Quill, ...: each side goes first and
# last equally often, so a machine that drifts during the run favours neither.
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
