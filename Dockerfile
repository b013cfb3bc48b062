# syntax=docker/dockerfile:1
#
# One image holds all four Quill processes; the command picks the binary:
#
#   docker build -t quill:local .
#   docker run --rm quill:local quill-auth migrate
#   docker run --rm -p 8080:8080 quill:local quill-gateway
#
# Stages: `chef` (toolchain + cargo-chef from crates.io), `planner` (the
# dependency recipe), `builder` (dependencies in their own cached layer, then
# the workspace), and two runtimes with the same binaries:
#   - `runtime` (default, debian:bookworm-slim): has bash, which the
#     docker-compose health checks use (`</dev/tcp/...`).
#   - `distroless` (`docker build --target distroless`): no shell at all, for
#     Kubernetes, whose probes are native (gRPC health service, HTTP).
# No step needs a system protoc or the network beyond crates.io and Debian:
# proto/build.rs compiles the .proto files with protox.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

# The recipe changes only when a manifest or Cargo.lock does.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused as long as the recipe is unchanged.
RUN cargo chef cook --release --locked --bins --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir -p /out \
    && for bin in quill-auth quill-content quill-notification quill-gateway; do \
         cp "target/release/$bin" /out/; \
       done

# Shell-less runtime for Kubernetes. `nonroot` is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS distroless
COPY --from=builder /out/ /usr/local/bin/
ENV RUST_LOG=info \
    AUTH_LISTEN=0.0.0.0:50051 \
    CONTENT_LISTEN=0.0.0.0:50052 \
    NOTIFICATION_LISTEN=0.0.0.0:50053 \
    GATEWAY_LISTEN=0.0.0.0:8080
USER 65532:65532
EXPOSE 8080 50051 50052 50053 9100
CMD ["quill-gateway"]

# Default runtime (last stage): small Debian with bash for compose health checks.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates follows the Debian release; pinning its exact version would
# break the build at every point release.
# /var/lib/quill/uploads: a named volume mounted there (the gateway's uploads)
# starts with its owner, the unprivileged user.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 quill \
    && useradd --system --uid 65532 --gid quill --no-create-home \
         --home-dir /nonexistent --shell /usr/sbin/nologin quill \
    && install -d -o 65532 -g 65532 /var/lib/quill/uploads
COPY --from=builder /out/ /usr/local/bin/
# Containers listen on every interface; the binaries' own defaults are loopback.
ENV RUST_LOG=info \
    AUTH_LISTEN=0.0.0.0:50051 \
    CONTENT_LISTEN=0.0.0.0:50052 \
    NOTIFICATION_LISTEN=0.0.0.0:50053 \
    GATEWAY_LISTEN=0.0.0.0:8080
USER 65532:65532
EXPOSE 8080 50051 50052 50053 9100
# No ENTRYPOINT: the command names the binary (and its subcommand, e.g.
# `quill-content migrate`). The processes handle SIGTERM themselves and drain.
CMD ["quill-gateway"]
