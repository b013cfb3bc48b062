#!/usr/bin/env bash
# Every test: unit and integration tests (each on its own databases and Redis
# prefix, in parallel), built once.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything in one build: the binaries (the gateway's processes test and
# the Postman suite run the real quill-* processes) with the test targets,
# so features unify once and nextest below builds nothing again. Building
# `--bins` alone would resolve features without the dev-dependencies and
# compile every workspace crate a second time.
cargo build --workspace --all-targets

# The S3-compatible server the gateway's s3:// image store is tested against.
QUILL_S3_SERVER=$(scripts/s3-server.sh)
export QUILL_S3_SERVER

cargo nextest run --workspace --all-targets --no-fail-fast

# The official RealWorld Postman suite against the whole running system.
scripts/e2e-postman.sh
