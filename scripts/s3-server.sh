#!/usr/bin/env bash
# An S3-compatible server for the test of the gateway's s3:// image store:
# moto's standalone server (PyPI), pinned, in a virtualenv under
# $QUILL_TEST_TOOLS (default ~/.cache/quill/test-tools). Installs it once,
# then prints the path of its `moto_server`, which the test runs on a port
# of its own (QUILL_S3_SERVER).
set -euo pipefail

VERSION=5.2.5
TOOLS_DIR=${QUILL_TEST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/quill/test-tools}
VENV=$TOOLS_DIR/s3-venv

if [[ "$("$VENV/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p')" != "$VERSION" ]]; then
    echo "==> installing moto[server]==$VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$VERSION" >&2
fi
echo "$VENV/bin/moto_server"
