#!/usr/bin/env bash
# PostgreSQL, Redis and RabbitMQ on their standard loopback ports, which
# `just up`, `just test` and CI need.
#
#   scripts/backing-services.sh ensure   start each one installed but stopped;
#                                        for one not installed, print the
#                                        install command and exit 1
#   scripts/backing-services.sh doctor   report what is there: the services
#                                        (version, port) and the tools the
#                                        tests need; exit 1 if one is missing
set -euo pipefail
cd "$(dirname "$0")/.."

# name | port | the command that tells it is installed | how to start it | Debian package
SERVICES=(
    "PostgreSQL|5432|pg_ctlcluster|pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start|postgresql"
    "Redis|6379|redis-server|redis-server --daemonize yes --bind '127.0.0.1 -::1' --port 6379 --save '' --appendonly no|redis-server"
    "RabbitMQ|5672|rabbitmq-server|rabbitmq-server -detached|rabbitmq-server"
)

listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# RabbitMQ takes its port before it takes connections; ask it when it can.
ready() {
    local name=$1 port=$2
    listening "$port" || return 1
    case $name in
        PostgreSQL) ! command -v pg_isready >/dev/null || pg_isready -q -h 127.0.0.1 -p "$port" ;;
        RabbitMQ) ! command -v rabbitmq-diagnostics >/dev/null || rabbitmq-diagnostics -q ping >/dev/null 2>&1 ;;
        *) true ;;
    esac
}

version() {
    case $1 in
        PostgreSQL) psql --version 2>/dev/null | awk '{print $3}' ;;
        Redis) redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p' ;;
        RabbitMQ) rabbitmqctl version 2>/dev/null | tail -1 ;;
    esac
}

ensure() {
    local entry name port installed start package missing=0
    for entry in "${SERVICES[@]}"; do
        IFS='|' read -r name port installed start package <<<"$entry"
        ready "$name" "$port" && continue
        if ! command -v "$installed" >/dev/null; then
            echo "$name is not installed: sudo apt-get install -y $package" >&2
            missing=1
            continue
        fi
        echo "starting $name" >&2
        eval "$start" >/dev/null
        for _ in $(seq 1 60); do ready "$name" "$port" && break; sleep 1; done
        ready "$name" "$port" || { echo "$name did not start within 60 s" >&2; exit 1; }
    done
    return "$missing"
}

doctor() {
    local entry name port installed start package problems=0
    echo "services:"
    for entry in "${SERVICES[@]}"; do
        IFS='|' read -r name port installed start package <<<"$entry"
        if ready "$name" "$port"; then
            printf '  %-11s %-10s listening on 127.0.0.1:%s\n' "$name" "$(version "$name")" "$port"
        elif command -v "$installed" >/dev/null; then
            printf '  %-11s %-10s installed, stopped (scripts/backing-services.sh ensure starts it)\n' "$name" "$(version "$name")"
        else
            printf '  %-11s missing: sudo apt-get install -y %s\n' "$name" "$package"
            problems=1
        fi
    done
    echo "tools:"
    # tool | why | how to get it
    local tools=(
        "cargo|builds everything|https://rustup.rs"
        "cargo-nextest|runs the tests|cargo install --locked cargo-nextest"
        "just|runs the recipes|pip install rust-just==1.59.0"
        "npm|buf (proto lint) and newman (the Postman suite)|sudo apt-get install -y npm"
        "openssl|just up makes a signing key|sudo apt-get install -y openssl"
        "chromium|the docs page's browser test|sudo apt-get install -y chromium"
        "chromedriver|drives chromium in that test|sudo apt-get install -y chromium-driver"
    )
    local tool what how found
    for entry in "${tools[@]}"; do
        IFS='|' read -r tool what how <<<"$entry"
        if found=$(command -v "$tool"); then
            printf '  %-14s %s (%s)\n' "$tool" "$found" "$what"
        else
            printf '  %-14s missing, %s: %s\n' "$tool" "$what" "$how"
            problems=1
        fi
    done
    return "$problems"
}

case ${1:-} in
    ensure) ensure ;;
    doctor) doctor ;;
    *) echo "usage: $0 ensure|doctor" >&2; exit 2 ;;
esac
