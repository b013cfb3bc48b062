//! Integration tests of auth: its gRPC API and its events.
//!
//! One test binary per crate: built and linked once. nextest runs every
//! test in its own process, so process-wide state (telemetry, metrics)
//! stays per test.

mod auth_grpc;
mod events;
mod readiness;
mod support;
