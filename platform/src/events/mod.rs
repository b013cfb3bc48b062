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
pub mod envelope;
pub mod outbox;
pub mod relay;

use std::{future::Future, time::Duration};

use futures::future::{BoxFuture, FutureExt, Shared};

/// Handlers implement [`EventHandler`] with this attribute; re-exported so
/// services need no dependency of their own.
pub use async_trait::async_trait;
pub use broker::Topology;
pub use config::EventsConfig;
pub use consumer::{Consumer, EventHandler, HandlerError};
pub use envelope::{new_envelope, routing_key};
pub use outbox::{OUTBOX_AND_INBOX_SQL, enqueue};
pub use relay::{OutboxRelay, backlog};

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
}

/// A shutdown signal that several loops can await, any number of times.
pub(crate) type Shutdown = Shared<BoxFuture<'static, ()>>;

pub(crate) fn shared_shutdown(signal: impl Future<Output = ()> + Send + 'static) -> Shutdown {
    signal.boxed().shared()
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

/// Sleeps for `delay`; returns `true` if shutdown came first.
pub(crate) async fn sleep_or_shutdown(delay: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = shutdown.clone() => true,
    }
}

/// Doubling reconnect delays (100 ms up to 5 s), reset after a success, so a
/// long outage costs little and a blip recovers fast.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}
