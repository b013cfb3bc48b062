//! Integration tests of the event backbone: outbox, relay and consumers on the real PostgreSQL and RabbitMQ, and their traces.
//!
//! One test binary per crate: built and linked once. nextest runs every
//! test in its own process, so process-wide state (telemetry, metrics)
//! stays per test.

mod batches;
mod events;
mod retention;
mod telemetry;
