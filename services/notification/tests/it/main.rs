//! Integration tests of notification: its gRPC API, its event handling and
//! live pushes, against the real PostgreSQL, RabbitMQ and an SMTP sink.
//!
//! One test binary per crate: built and linked once.

mod notifications;
mod support;
