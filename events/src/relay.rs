//! The outbox relay: publishes unsent outbox rows and marks them sent.
//!
//! Each batch runs in one database transaction: lock the oldest unsent rows
//! with `FOR UPDATE SKIP LOCKED` (so relay replicas share the work and never
//! publish the same row concurrently), publish them all, wait for the
//! broker's confirms, then mark them sent and commit. Any broker failure rolls
//! the transaction back, so the rows stay unsent and go out after the
//! reconnect: an outage delays events, it never loses them. A crash between
//! the confirms and the commit publishes a batch twice; consumers deduplicate
//! on `event_id`.
//!
//! A batch's events of one type may share a message (an `EnvelopeBatch`,
//! [`OutboxRelay::events_per_message`]): the broker's cost, its queue log
//! and its confirm, is per message, whatever the message holds.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::try_join_all;
use lapin::{
    Channel, Connection, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use prost::Message;
use quill_proto::events::v1::{Envelope, EnvelopeBatch};
use sqlx::PgPool;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use quill_platform::{metrics, trace_context};

use quill_platform::{
    retry::Backoff,
    shutdown::{CancellationToken, sleep_or_cancelled},
};

use crate::{EventsError, Topology, broker, message};

/// The most bytes of events the relay packs into one message; an event
/// larger than this still goes, alone.
const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// How long the broker may take to confirm a batch before the relay gives up
/// on the connection (a blackholed broker never answers).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the relay waits for its [`Published`] hook before it goes on:
/// far above a healthy Redis round trip (under 1 ms), and low enough that a
/// hung hook still lets about 20 batches a second through.
const HOOK_WAIT: Duration = Duration::from_millis(50);
/// How often the relay refreshes the outbox gauges.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Number of events waiting to be published, for the outbox backlog gauge.
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    Ok(pending(pool).await?.rows)
}

/// What waits in the outbox: how many rows, and how long the oldest has.
struct Pending {
    rows: i64,
    oldest_age_seconds: f64,
}

/// One scan of the unpublished rows' partial index for both gauges.
async fn pending(pool: &PgPool) -> Result<Pending, sqlx::Error> {
    let (rows, oldest_age_seconds): (i64, f64) = sqlx::query_as(
        "SELECT count(*),
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(Pending {
        rows,
        oldest_age_seconds,
    })
}

/// What a service does once events have left (marked sent and committed).
#[async_trait::async_trait]
pub trait Published: Send + Sync + 'static {
    /// `events`, in outbox order. Best effort: nothing retries it. The
    /// relay drops a call that takes longer than 50 ms (`HOOK_WAIT`) and
    /// goes on, so work that must finish past that runs on a task of its
    /// own, started before the call's first wait and bounded in time (as
    /// content's cache bump does, `Cache::invalidate`).
    async fn published(&self, events: &[Envelope]);
}

#[derive(Clone)]
struct PublishedHook(Arc<dyn Published>);

impl fmt::Debug for PublishedHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublishedHook")
    }
}

/// Publishes a service's outbox to the event exchange. Run one per replica.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    amqp_url: String,
    exchange: String,
    batch_size: i64,
    events_per_message: usize,
    poll_interval: Duration,
    queues: Vec<Topology>,
    published: Option<PublishedHook>,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, amqp_url: impl Into<String>, exchange: impl Into<String>) -> Self {
        Self {
            pool,
            amqp_url: amqp_url.into(),
            exchange: exchange.into(),
            batch_size: 100,
            events_per_message: 1,
            poll_interval: Duration::from_millis(200),
            queues: Vec::new(),
            published: None,
        }
    }

    /// Tells `hook` what each batch carried once it is sent: effects of an
    /// event that must follow its commit, on every replica's and every
    /// restart's behalf (a process that died after its commit has its rows
    /// sent by another).
    pub fn on_published(mut self, hook: impl Published) -> Self {
        self.published = Some(PublishedHook(Arc::new(hook)));
        self
    }

    /// Declares these consumers' queues and bindings on every connect
    /// (idempotent), so what the relay publishes before a consumer first
    /// starts waits in its queue: the exchange drops what no binding routes.
    /// Retry queues are left to each consumer, whose retry delays this
    /// process's settings may not share (redeclaring a queue with other
    /// arguments fails).
    pub fn declare_queues(mut self, topologies: impl IntoIterator<Item = Topology>) -> Self {
        self.queues.extend(topologies.into_iter().map(|t| Topology {
            retry_delays: Vec::new(),
            ..t
        }));
        self
    }

    /// How long an idle relay waits before looking for new rows (default 200 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Rows published per transaction (default 100).
    pub fn batch_size(mut self, rows: i64) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Events of one type sent together in one message, at most (default
    /// 1: each alone). The broker's cost is per message, so a busy outbox
    /// costs it less; consumers built before `EnvelopeBatch` park such
    /// messages, so raise it only once none of those runs.
    pub fn events_per_message(mut self, events: usize) -> Self {
        self.events_per_message = events.max(1);
        self
    }

    /// Publishes until `shutdown` is cancelled, reconnecting with backoff
    /// whenever the broker or the database fails. A batch in flight when
    /// shutdown comes either commits or rolls back; nothing is half-sent.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut publisher: Option<Publisher> = None;
        let db = database_name(&self.pool);
        let backlog_gauge = metrics::get().outbox_backlog.with_label_values(&[&db]);
        let oldest_gauge = metrics::get().outbox_oldest_age.with_label_values(&[&db]);
        let mut commits = crate::outbox::commits();
        let mut sampled: Option<Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // The gauges cost a scan of the pending rows: once a second at
            // most, not once per batch of a busy outbox; and before the
            // broker is reached, so they keep moving while it is down.
            if sampled.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL)
                && let Ok(pending) = pending(&self.pool).await
            {
                backlog_gauge.set(pending.rows);
                oldest_gauge.set(pending.oldest_age_seconds);
                sampled = Some(Instant::now());
            }
            let channel = match &publisher {
                Some(p) if p.connection.status().connected() => p.channel.clone(),
                _ => match self.open().await {
                    Ok(p) => {
                        let channel = p.channel.clone();
                        publisher = Some(p);
                        channel
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox relay cannot reach the broker");
                        if sleep_or_cancelled(backoff.next_delay(), &shutdown).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            // Commits from here on wake the next wait: none slips between
            // this batch's read and the wait.
            commits.borrow_and_update();
            let batch = self.relay_batch(&channel).await;
            let idle = match batch {
                Ok(sent) => {
                    backoff.reset();
                    sent < self.batch_size as usize
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox batch not published, will retry");
                    if !matches!(e, EventsError::Db(_)) {
                        // The channel may be unusable; start again from a fresh connection.
                        if let Some(p) = publisher.take() {
                            p.close().await;
                        }
                    }
                    if sleep_or_cancelled(backoff.next_delay(), &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            if idle {
                // Woken by a commit in this process; the poll finds rows
                // other processes committed (a replica that died before
                // publishing its own).
                tokio::select! {
                    _ = commits.changed() => {}
                    () = tokio::time::sleep(self.poll_interval) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
        if let Some(p) = publisher {
            p.close().await;
        }
        tracing::info!("outbox relay stopped");
    }

    async fn open(&self) -> Result<Publisher, EventsError> {
        let connection = broker::connect(&self.amqp_url, "outbox-relay").await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        broker::declare_exchange(&channel, &self.exchange).await?;
        for topology in &self.queues {
            topology.declare(&channel).await?;
        }
        Ok(Publisher {
            connection,
            channel,
        })
    }

    /// Publishes one batch; returns how many rows it sent.
    async fn relay_batch(&self, channel: &Channel) -> Result<usize, EventsError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(Uuid, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, routing_key, payload FROM outbox
             WHERE published_at IS NULL
             ORDER BY created_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = rows.iter().map(|(id, _, _)| *id).collect();
        let events: Vec<Outgoing> = rows.into_iter().map(Outgoing::from).collect();
        match self.publish_all(channel, &events).await {
            Ok(()) => {
                sqlx::query(
                    "UPDATE outbox SET published_at = now(), attempts = attempts + 1
                     WHERE id = ANY($1)",
                )
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                for event in &events {
                    metrics::get()
                        .events_published
                        .with_label_values(&[event.routing_key.as_str()])
                        .inc();
                }
                if let Some(PublishedHook(hook)) = &self.published {
                    let envelopes: Vec<Envelope> =
                        events.into_iter().filter_map(|e| e.envelope).collect();
                    announce(hook.as_ref(), &envelopes).await;
                }
                Ok(ids.len())
            }
            Err(e) => {
                tx.rollback().await?;
                // Best effort: the count only informs operators.
                let _ = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1
                     WHERE id = ANY($1) AND published_at IS NULL",
                )
                .bind(&ids)
                .execute(&self.pool)
                .await;
                Err(e)
            }
        }
    }

    /// Publishes every message, then waits for all confirms: pipelining the
    /// batch costs one round trip instead of one per message.
    async fn publish_all(&self, channel: &Channel, events: &[Outgoing]) -> Result<(), EventsError> {
        let mut confirms = Vec::new();
        for message in pack(events, self.events_per_message) {
            let confirm = match message {
                Packed::Alone(event) => self.publish_one(channel, event).await?,
                Packed::Together {
                    routing_key,
                    events,
                } => self.publish_together(channel, routing_key, &events).await?,
            };
            confirms.push(confirm);
        }
        let confirmations = tokio::time::timeout(CONFIRM_TIMEOUT, try_join_all(confirms))
            .await
            .map_err(|_| EventsError::Timeout(CONFIRM_TIMEOUT))??;
        if confirmations.iter().all(lapin::Confirmation::is_ack) {
            Ok(())
        } else {
            Err(EventsError::Nacked)
        }
    }

    /// The row's payload as it is, in a message of its own.
    async fn publish_one(
        &self,
        channel: &Channel,
        event: &Outgoing,
    ) -> Result<PublisherConfirm, EventsError> {
        let span = publish_span(&self.exchange, event);
        let context = trace_of(&span, event.envelope.as_ref());
        let producer = event.envelope.as_ref().map_or("", |e| e.producer.as_str());
        let properties = message::single(
            &event.id.to_string(),
            &event.routing_key,
            producer,
            (&context.0, &context.1),
        );
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                event.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &event.payload,
                properties,
            )
            .instrument(span)
            .await?;
        Ok(confirm)
    }

    /// Events of one type in one `EnvelopeBatch`, each envelope carrying its
    /// own publish span's context, so each event's trace goes on through
    /// the consumer as if it had travelled alone.
    async fn publish_together(
        &self,
        channel: &Channel,
        routing_key: &str,
        events: &[(&Outgoing, &Envelope)],
    ) -> Result<PublisherConfirm, EventsError> {
        let mut spans = Vec::with_capacity(events.len());
        let mut envelopes = Vec::with_capacity(events.len());
        for (event, envelope) in events {
            let span = publish_span(&self.exchange, event);
            let (traceparent, tracestate) = trace_of(&span, Some(envelope));
            let envelope = Envelope {
                traceparent,
                tracestate,
                ..(*envelope).clone()
            };
            spans.push(span);
            envelopes.push(envelope);
        }
        let producer = envelopes.first().map_or("", |e| e.producer.as_str());
        let properties = message::batch(&Uuid::now_v7().to_string(), routing_key, producer);
        let body = EnvelopeBatch { envelopes }.encode_to_vec();
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
        // The spans end once the batch is handed to the broker.
        drop(spans);
        Ok(confirm)
    }
}

/// Hands a sent batch to the [`Published`] hook and waits for it, but no
/// longer than [`HOOK_WAIT`]. The wait is what sizes the next batch under
/// load (what commits meanwhile goes with it), and was worth keeping:
/// without it, batches were smaller, and the extra messages and consumer
/// transactions cost more CPU and a longer tail (bench/README.md, the
/// fifteenth pass). The cap keeps a hook that hangs (content's Redis bump
/// waits up to 2 s for a Redis that does not answer) from slowing every
/// event to a batch per hang.
async fn announce(hook: &dyn Published, events: &[Envelope]) {
    if tokio::time::timeout(HOOK_WAIT, hook.published(events))
        .await
        .is_err()
    {
        // Debug: a hook that hangs reports its own failure (the cache logs
        // each bump that timed out), and one line a batch would double it.
        tracing::debug!(
            wait_ms = HOOK_WAIT.as_millis(),
            "the published hook is slow; the relay goes on without it"
        );
    }
}

/// One outbox row on its way out.
struct Outgoing {
    id: Uuid,
    routing_key: String,
    payload: Vec<u8>,
    /// `None` for a payload that does not decode: it goes out alone, as it
    /// is, for the consumers to park.
    envelope: Option<Envelope>,
}

impl From<(Uuid, String, Vec<u8>)> for Outgoing {
    fn from((id, routing_key, payload): (Uuid, String, Vec<u8>)) -> Self {
        let envelope = Envelope::decode(payload.as_slice()).ok();
        Self {
            id,
            routing_key,
            payload,
            envelope,
        }
    }
}

/// How an outbox row goes out.
enum Packed<'a> {
    /// In a message of its own, as stored.
    Alone(&'a Outgoing),
    /// With others of its type, in one `EnvelopeBatch`.
    Together {
        routing_key: &'a str,
        events: Vec<(&'a Outgoing, &'a Envelope)>,
    },
}

impl<'a> Packed<'a> {
    /// One message of `routing_key` events: alone if it is one.
    fn of(routing_key: &'a str, events: Vec<(&'a Outgoing, &'a Envelope)>) -> Self {
        match events[..] {
            [(alone, _)] => Self::Alone(alone),
            _ => Self::Together {
                routing_key,
                events,
            },
        }
    }
}

/// The messages a batch of rows goes out in: each routing key's events in
/// outbox order, at most `per_message` and about [`MAX_MESSAGE_BYTES`] to a
/// message. An event that does not decode travels alone. Events of
/// different types may leave in another order than the outbox's, which
/// consumers never relied on: they apply deliveries concurrently.
fn pack(events: &[Outgoing], per_message: usize) -> Vec<Packed<'_>> {
    let mut by_type: Vec<(&str, Vec<(&Outgoing, &Envelope)>)> = Vec::new();
    let mut messages = Vec::new();
    for event in events {
        let Some(envelope) = event.envelope.as_ref().filter(|_| per_message > 1) else {
            messages.push(Packed::Alone(event));
            continue;
        };
        match by_type
            .iter_mut()
            .find(|(key, _)| *key == event.routing_key)
        {
            Some((_, same)) => same.push((event, envelope)),
            None => by_type.push((&event.routing_key, vec![(event, envelope)])),
        }
    }
    for (routing_key, same) in by_type {
        let mut message = Vec::new();
        let mut bytes = 0;
        for (event, envelope) in same {
            if !message.is_empty()
                && (message.len() == per_message || bytes + event.payload.len() > MAX_MESSAGE_BYTES)
            {
                messages.push(Packed::of(routing_key, std::mem::take(&mut message)));
                bytes = 0;
            }
            bytes += event.payload.len();
            message.push((event, envelope));
        }
        messages.push(Packed::of(routing_key, message));
    }
    messages
}

/// The trace context an event travels with: its publish span's, or, when
/// that is not traced, the one its envelope was written with.
fn trace_of(span: &Span, envelope: Option<&Envelope>) -> (String, String) {
    match (trace_context::to_strings(span), envelope) {
        ((parent, _), Some(envelope)) if parent.is_empty() => {
            (envelope.traceparent.clone(), envelope.tracestate.clone())
        }
        (context, _) => context,
    }
}

/// The span of one event's publish: a child of the request that raised it
/// (its context was captured in the envelope at enqueue time), so the trace
/// reads request -> publish -> consume however late the relay runs.
fn publish_span(exchange: &str, event: &Outgoing) -> Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("{exchange} publish"),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation = "publish",
        messaging.destination.name = %exchange,
        messaging.rabbitmq.destination.routing_key = %event.routing_key,
        messaging.message.id = %event.id,
    );
    if let Some(envelope) = &event.envelope {
        let cx = trace_context::from_strings(&envelope.traceparent, &envelope.tracestate);
        let _ = span.set_parent(cx);
    }
    span
}

struct Publisher {
    connection: Connection,
    channel: Channel,
}

impl Publisher {
    async fn close(self) {
        broker::close_channel(&self.channel, "relay stopping").await;
        let _ = self.connection.close(200, "relay stopping".into()).await;
    }
}

/// The `db` label of the outbox gauges.
fn database_name(pool: &PgPool) -> String {
    pool.connect_options()
        .get_database()
        .unwrap_or("postgres")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(routing_key: &str, payload_bytes: usize, decodes: bool) -> Outgoing {
        Outgoing {
            id: Uuid::now_v7(),
            routing_key: routing_key.to_owned(),
            payload: vec![0; payload_bytes],
            envelope: decodes.then(|| Envelope {
                r#type: routing_key.to_owned(),
                ..Envelope::default()
            }),
        }
    }

    /// Each message as (its events' routing key, how many events); a
    /// message alone is 1.
    fn shape(packed: &[Packed<'_>]) -> Vec<(String, usize)> {
        packed
            .iter()
            .map(|message| match message {
                Packed::Alone(event) => (event.routing_key.clone(), 1),
                Packed::Together {
                    routing_key,
                    events,
                } => {
                    assert!(events.iter().all(|(e, _)| e.routing_key == *routing_key));
                    ((*routing_key).to_owned(), events.len())
                }
            })
            .collect()
    }

    #[test]
    fn events_are_grouped_by_type_up_to_the_count_and_the_undecodable_go_alone() {
        let mut events: Vec<Outgoing> = Vec::new();
        events.push(outgoing("a", 10, true));
        events.push(outgoing("b", 10, true));
        events.push(outgoing("a", 10, false));
        events.extend((0..4).map(|_| outgoing("a", 10, true)));
        let packed = pack(&events, 2);
        assert_eq!(
            shape(&packed),
            [("a", 1), ("a", 2), ("a", 2), ("a", 1), ("b", 1)].map(|(key, n)| (key.to_owned(), n))
        );
        assert!(matches!(packed[0], Packed::Alone(e) if e.envelope.is_none()));
        // One a message: every event alone, in outbox order.
        let alone = pack(&events, 1);
        assert!(alone.iter().all(|m| matches!(m, Packed::Alone(_))));
        let order: Vec<Uuid> = alone
            .iter()
            .map(|m| match m {
                Packed::Alone(e) => e.id,
                Packed::Together { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(order, events.iter().map(|e| e.id).collect::<Vec<_>>());
    }

    #[test]
    fn a_message_holds_about_its_byte_budget_and_a_larger_event_goes_alone() {
        let events = [
            outgoing("a", MAX_MESSAGE_BYTES / 2, true),
            outgoing("a", MAX_MESSAGE_BYTES / 2, true),
            outgoing("a", 1, true),
            outgoing("a", MAX_MESSAGE_BYTES * 2, true),
            outgoing("a", 1, true),
        ];
        assert_eq!(
            shape(&pack(&events, 32)),
            [("a", 2), ("a", 1), ("a", 1), ("a", 1)].map(|(key, n)| (key.to_owned(), n))
        );
    }
}
