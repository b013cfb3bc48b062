//! Broker connections and topology. lapin does not reconnect by itself, so
//! the relay and the consumer each supervise their own connection: connect
//! with backoff, declare what they use (idempotently), and start over when
//! the connection drops.
//!
//! Topology per consuming service, on one topic exchange (`quill.events`):
//!
//! ```text
//! <exchange> (topic) --binding keys--> <queue>
//! <queue> --consumer republishes on failure--> <queue>.retry.<n> (x-message-ttl = delay n)
//! <queue>.retry.<n> --TTL expiry, dead-lettered via the default exchange--> <queue>
//! <queue> --parked after max attempts / rejected--> <exchange>.dlx (direct) --> <queue>.dlq
//! ```
//!
//! One retry queue per delay, because RabbitMQ only expires messages at the
//! head of a queue: mixing delays in one queue would hold short ones behind
//! long ones. Retries dead-letter through the default exchange straight to
//! their own queue, so another service's queue never sees them twice.
//!
//! Every queue is a quorum queue: replicated over the cluster's nodes, so
//! losing one node loses no event (classic queues live on one). The main
//! queue has a delivery limit: a message redelivered that many times
//! without a verdict from the handler (the consumer crashes on it, or its
//! connection keeps dropping) is parked, so a poison message cannot crash
//! every replica in turn forever. Dead-lettering is at-least-once (with
//! `reject-publish` overflow, which it requires), never dropped on the way.
//!
//! A queue's type cannot change in place, so the quorum queues have new
//! names (`<queue>.v2`, see `catalog`). A broker of an older Quill still
//! has the classic `<queue>` and its retry queues: `legacy` retires them.

use std::time::Duration;

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
    uri::AMQPUri,
};

use crate::EventsError;

/// How long a connection attempt may take before it counts as failed (a
/// blackholed broker would otherwise hang the supervisor).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Header carrying how many times handling a message has failed so far.
pub const ATTEMPTS_HEADER: &str = "x-attempts";
/// Header carrying the last handler error of a retried or parked message.
pub const LAST_ERROR_HEADER: &str = "x-last-error";
/// Header carrying the event's own routing key once a retry has republished
/// it to a retry queue (whose dead-lettering replaces the routing key).
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";

/// The largest AMQP frame a connection proposes, unless its URL sets
/// `frame_max`. lapin holds 32 frames of receive and 32 of send buffer per
/// connection, zero-filled: at RabbitMQ's default of 128 KiB, 8 MiB
/// resident each, and a service holds two (relay, consumer). An event is
/// a few hundred bytes, at most about 20 KiB (a carried audience); a
/// larger body is sent over several frames. Its headers cannot be split:
/// they must fit in one (the trace context and a retry's error, capped at
/// 512 characters, do).
pub const FRAME_MAX: u32 = 16 * 1024;

/// How long closing a channel may wait for the broker: one that stopped
/// answering must not hold up a shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens one connection, named so it can be told apart in `rabbitmqctl`.
pub async fn connect(url: &str, name: &str) -> Result<Connection, EventsError> {
    let mut uri: AMQPUri = url.parse().map_err(EventsError::Url)?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties))
        .await
        .map_err(|_| EventsError::Timeout(CONNECT_TIMEOUT))?
        .map_err(EventsError::from)
}

/// Closes a channel, and waits for the broker's answer (at most
/// `CLOSE_TIMEOUT`), before its connection closes. A channel whose last
/// handle is dropped while open is closed by lapin in the background; when
/// its connection is closing by then, lapin's close finds the channel
/// closing too and logs that at ERROR as a connection error, for a
/// shutdown that went as it should.
pub async fn close_channel(channel: &Channel, reason: &str) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, reason.into())).await;
    }
}

/// Declares the durable topic exchange events are published to.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
}

/// Everything one consuming service needs on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The topic exchange events are published to.
    pub exchange: String,
    /// The service's durable queue; replicas compete on it.
    pub queue: String,
    /// Routing keys or topic patterns (`user.*`) the queue is bound to.
    pub bindings: Vec<String>,
    /// Handler runs before a message is parked in the DLQ.
    pub max_attempts: u32,
    /// Delay before retry 1, 2, ...; later retries reuse the last delay.
    pub retry_delays: Vec<Duration>,
    /// The classic queue an older Quill consumed for this service (with
    /// its `.retry.<n>` queues), which the consumer retires (`legacy`).
    pub legacy_queue: Option<String>,
}

impl Topology {
    /// The dead-letter exchange shared by all queues on `exchange`.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.exchange)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// The queue holding messages for retry `n` (1-based).
    pub fn retry_queue(&self, n: usize) -> String {
        format!("{}.retry.{n}", self.queue)
    }

    /// Every queue this topology declares, for tests and tooling that tidy up.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.queue.clone(), self.dead_letter_queue()];
        queues.extend((1..=self.retry_delays.len()).map(|n| self.retry_queue(n)));
        queues
    }

    /// Where a message goes after its `attempts`-th failed run: a retry
    /// queue, or `None` once it has had all its attempts (then the DLQ).
    pub fn retry_queue_after(&self, attempts: u32) -> Option<String> {
        if attempts >= self.max_attempts || self.retry_delays.is_empty() {
            return None;
        }
        let n = (attempts as usize).clamp(1, self.retry_delays.len());
        Some(self.retry_queue(n))
    }

    /// Declares exchanges, queues and bindings. Idempotent, so every replica
    /// runs it at start and after each reconnect. Changing the arguments of an
    /// existing queue (e.g. a retry delay) fails with PRECONDITION_FAILED:
    /// such a change needs new queue names or a manual migration.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let dlx = self.dead_letter_exchange();
        let dlq = self.dead_letter_queue();
        declare_exchange(channel, &self.exchange).await?;
        channel
            .exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Direct,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;

        declare_queue(channel, &dlq, quorum()).await?;
        bind(channel, &dlq, &dlx, &self.queue).await?;

        // Anything the broker itself dead-letters (a reject without requeue,
        // the delivery limit) is parked too, never dropped.
        let mut main = dead_lettering(&dlx, &self.queue);
        main.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DELIVERY_LIMIT),
        );
        declare_queue(channel, &self.queue, main).await?;

        for (i, delay) in self.retry_delays.iter().enumerate() {
            let mut retry = dead_lettering("", &self.queue);
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            retry.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            declare_queue(channel, &self.retry_queue(i + 1), retry).await?;
        }

        for key in &self.bindings {
            bind(channel, &self.queue, &self.exchange, key).await?;
        }
        Ok(())
    }
}

/// Redeliveries without a verdict before the broker parks a message: a
/// rolling restart returns a consumer's prefetched messages once, a crash
/// loop on one message every time.
pub const DELIVERY_LIMIT: i32 = 20;

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string_value("quorum"));
    args
}

/// A quorum queue dead-lettering to `exchange` with `routing_key`, at least
/// once.
fn dead_lettering(exchange: &str, routing_key: &str) -> FieldTable {
    let mut args = quorum();
    args.insert("x-dead-letter-exchange".into(), string_value(exchange));
    args.insert(
        "x-dead-letter-routing-key".into(),
        string_value(routing_key),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        string_value("at-least-once"),
    );
    args.insert("x-overflow".into(), string_value("reject-publish"));
    args
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    args: FieldTable,
) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(name.into(), options, args).await?;
    Ok(())
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

pub(crate) fn string_value(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(max_attempts: u32, delays: &[u64]) -> Topology {
        Topology {
            exchange: "x".into(),
            queue: "q".into(),
            bindings: vec![],
            max_attempts,
            retry_delays: delays.iter().map(|d| Duration::from_millis(*d)).collect(),
            legacy_queue: None,
        }
    }

    #[test]
    fn retries_walk_the_delays_then_stop_at_max_attempts() {
        let t = topology(4, &[100, 200]);
        assert_eq!(t.retry_queue_after(1).as_deref(), Some("q.retry.1"));
        assert_eq!(t.retry_queue_after(2).as_deref(), Some("q.retry.2"));
        assert_eq!(t.retry_queue_after(3).as_deref(), Some("q.retry.2"));
        assert_eq!(t.retry_queue_after(4), None);
        assert_eq!(topology(3, &[]).retry_queue_after(1), None);
    }
}
