//! Integration tests of content: articles, lists, social features and events through its gRPC API.
//!
//! One test binary per crate: built and linked once. nextest runs every
//! test in its own process, so process-wide state (telemetry, metrics)
//! stays per test.

mod articles;
mod batches;
mod cache;
mod errors;
mod events;
mod lists;
mod migrations;
mod social;
mod support;
