#!/usr/bin/env bash
# The contracts' lints: buf lint, buf format, and buf breaking against main.
# Outbox rows and queued messages carry prost bytes an older build wrote, so
# a change that breaks the wire must fail here, not in production.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x node_modules/.bin/buf ] || npm ci --no-audit --no-fund --loglevel=error
buf=$PWD/node_modules/.bin/buf

cd proto
"$buf" lint
"$buf" format --diff --exit-code
# The branch to stay compatible with (BUF_AGAINST overrides, e.g. a tag).
against=${BUF_AGAINST:-../.git#branch=main,subdir=proto}
"$buf" breaking --against "$against"
echo "proto: lint, format and breaking checks passed"
