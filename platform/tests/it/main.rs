//! Integration tests of the platform crate.
//!
//! One test binary per crate: built and linked once. nextest runs every
//! test in its own process, so process-wide telemetry stays per test.

mod balance;
mod cache;
mod telemetry_http;
