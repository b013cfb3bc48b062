//! The event backbone: domain events leave a service through a transactional
//! outbox, an [`OutboxRelay`] publishes them to the RabbitMQ topic exchange with
//! publisher confirms, and a [`Consumer`] applies them exactly once per
//! database (the `event_id` is recorded in the handler's own transaction),
//! retrying with growing delays and parking poison messages in a DLQ.
//!
//! Delivery is at-least-once end to end; idempotent consumers make the effect
//! exactly-once. A broker outage, or an outage of a consumer's database, only
//! delays events: a consumer that cannot reach its dependencies requeues
//! deliveries without spending their attempts.

pub mod broker;
pub mod catalog;
pub mod config;
pub mod consumer;
mod consumer_metrics;
pub mod envelope;
mod group_commit;
pub mod legacy;
pub mod message;
pub mod outbox;
pub mod relay;
pub mod retention;
#[cfg(feature = "testing")]
pub mod testing;
mod trace_headers;

use std::time::Duration;

/// Handlers implement [`EventHandler`] with this attribute; re-exported so
/// services need no dependency of their own.
pub use async_trait::async_trait;
pub use broker::Topology;
pub use config::EventsConfig;
pub use consumer::{Consumer, EventHandler, HandlerError};
pub use envelope::{EventOrigin, new_envelope, routing_key};
pub use outbox::enqueue;
pub use relay::{OutboxRelay, Published, backlog};
pub use retention::Retention;

/// What can go wrong talking to the broker or the database while moving events.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("broker did not confirm a publish (nack)")]
    Nacked,
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker URL is invalid: {0}")]
    Url(String),
}

/// A client span around one statement (`db.system=postgresql`).
pub(crate) fn db_span(operation: &'static str, table: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{operation} {table}"),
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = operation,
        db.collection.name = table,
    )
}
