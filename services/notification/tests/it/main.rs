//! Integration tests of notification: its gRPC API, its event handling and
//! live pushes, against the real PostgreSQL, RabbitMQ and an SMTP sink; and
//! its migrations over existing data.
//!
//! One test binary per crate: built and linked once.

mod migrations;
mod notifications;
mod support;
