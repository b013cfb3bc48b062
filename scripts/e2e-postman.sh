#!/usr/bin/env bash
# Runs the official RealWorld Postman collection with newman against the whole
# system, started here on free ports with its own databases and Redis prefix
# (so it never collides with a running `just up`), and tears it all down.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/isolated-system.sh

[ -x node_modules/.bin/newman ] || npm ci --no-audit --no-fund --loglevel=error

run="e2e_$(date +%s)_$$"
logs="target/e2e/$run"
mkdir -p "$logs"
system_configure "$run"
system_start target/debug "$logs"
system_wait_ready || { echo "system did not become ready; logs in $logs" >&2; exit 1; }

node_modules/.bin/newman run e2e/Conduit.postman_collection.json \
    --global-var "APIURL=http://$GATEWAY_LISTEN/api" \
    --global-var "USERNAME=u$run" \
    --global-var "EMAIL=$run@example.com" \
    --global-var "PASSWORD=pw-$run" \
    --reporter-cli-no-console \
    --bail
