#!/usr/bin/env bash
# Every test: unit and integration tests (each on its own databases and Redis
# prefix, in parallel), built once.
set -euo pipefail
cd "$(dirname "$0")/.."

# The binaries first: the gateway's processes test and the Postman suite
# run the real quill-* processes (nextest builds only the gateway's).
cargo build --workspace --bins

cargo nextest run --workspace --all-targets --no-fail-fast

# The official RealWorld Postman suite against the whole running system.
scripts/e2e-postman.sh
