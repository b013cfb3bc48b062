# Quill's task runner. `just up` runs the whole system; `just test` runs every test.

set shell := ["bash", "-euo", "pipefail", "-c"]

default:
    @just --list

# Build every binary once.
build:
    cargo build --workspace --bins

# Migrate, then run auth, content, notification and the gateway in the foreground (Ctrl-C stops all).
up: build
    scripts/backing-services.sh ensure
    scripts/up.sh

# The same with N replicas of each service behind one gateway, calls balanced over them.
up-replicas n="2": build
    scripts/backing-services.sh ensure
    scripts/up.sh {{n}}

# What this machine has: PostgreSQL, Redis, RabbitMQ (versions, ports) and the tools the tests need.
doctor:
    scripts/backing-services.sh doctor

# Run every test against the real PostgreSQL, Redis and RabbitMQ.
test:
    scripts/test.sh

# Formatting and lints, as CI enforces them (buf guards the proto contracts).
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    scripts/lint-proto.sh

# Apply every service's migrations (creating the databases if needed).
migrate: build
    target/debug/quill-auth migrate
    target/debug/quill-content migrate
    target/debug/quill-notification migrate

# Benchmarks: the REST load table (bench-rest), then REST write -> notification latency and events/s through one consumer.
bench: bench-rest
    cargo run --release -p quill-bench

# The REST API under wrk load (bench/realworld-load.sh) against release processes on databases of their own: a Markdown table.
bench-rest:
    scripts/backing-services.sh ensure
    bench/rest-load.sh

# Where a request's CPU goes: ms per request by process, PostgreSQL database, Redis and RabbitMQ (bench/cpu-split.sh; ONLY=create_article unless set).
bench-cpu:
    scripts/backing-services.sh ensure
    bench/cpu-split.sh

# Quill beside another RealWorld implementation in one run, alternating rounds (bench/versus.sh; VERSUS_START starts the other).
bench-versus:
    scripts/backing-services.sh ensure
    bench/versus.sh
