#!/usr/bin/env bash
# Every test: unit and integration tests (each on its own databases and Redis
# prefix, in parallel), built once.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo nextest run --workspace --all-targets --no-fail-fast

# The official RealWorld Postman suite against the whole running system.
cargo build --workspace --bins
scripts/e2e-postman.sh
