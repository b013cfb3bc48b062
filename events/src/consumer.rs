//! The event consumer: applies each delivery once, in the handler's own
//! database transaction, and acks only after that transaction commits.
//!
//! Per delivery: decode the envelope (undecodable: park in the DLQ), begin a
//! transaction, record the `event_id` in `processed_events` (already there:
//! a redelivery, commit and ack without running the handler), run the
//! handler, commit, ack. Deliveries that wait together share one transaction
//! ([`crate::group_commit`]); each still settles on its own. A failed
//! handler rolls back; the message is
//! republished (with a confirm) to a retry queue with `x-attempts + 1`, or to
//! the DLQ once it has had `max_attempts` runs, and only then acked, so a
//! poison message never blocks the queue.
//!
//! A batch message (several events of one type, [`crate::message`]) is
//! split: each event is applied as if it had come alone, under a span of
//! its own, and one that fails is republished alone, to a retry queue, the
//! DLQ or this queue, spending no other event's attempts. The delivery is
//! acked once every event is applied or republished.
//!
//! An outage is not a poison message: when the consumer's own database (or
//! another dependency, as the handler reports with
//! [`HandlerError::Unavailable`]) is down, the run does not count as an
//! attempt. The consumer pauses, consumer-wide and for longer each time the
//! outage persists, then requeues the delivery intact (`basic.nack` with
//! `requeue`), so the DLQ only ever holds messages that fail by themselves.
//!
//! Deliveries are handled concurrently, up to the prefetch (`basic.qos`),
//! on the consumer's task: handlers are I/O bound, and the bound keeps a slow
//! handler from pulling the whole queue into memory. Concurrency means events
//! of one queue may be applied out of order; handlers must not assume order.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use prost::Message;
use quill_proto::events::v1::Envelope;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::time::Instant;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use quill_platform::{metrics, trace_context};

use quill_platform::{
    retry::Backoff,
    shutdown::{CancellationToken, sleep_or_cancelled},
};

use crate::{
    EventsError,
    broker::{self, ATTEMPTS_HEADER, LAST_ERROR_HEADER, ROUTING_KEY_HEADER, Topology},
    consumer_metrics,
    group_commit::GroupCommit,
    message::{self, Events},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// This event failed, but another run may succeed (a conflict, a
    /// serialization failure, a timeout): retried with growing delays, each
    /// run counted in `x-attempts`, parked in the DLQ after `max_attempts`.
    #[error("{0}")]
    Transient(BoxError),
    /// Will fail the same way every time (bad payload): parked in the DLQ at once.
    #[error("{0}")]
    Permanent(BoxError),
    /// Something the consumer depends on is down (its database, another
    /// service answering gRPC `Unavailable`): says nothing about the event.
    /// Not counted as an attempt and never parked: the consumer pauses (a
    /// consumer-wide backoff) and requeues the delivery intact, for as long
    /// as the outage lasts.
    #[error("{0}")]
    Unavailable(BoxError),
}

impl HandlerError {
    pub fn transient(e: impl Into<BoxError>) -> Self {
        Self::Transient(e.into())
    }

    pub fn permanent(e: impl Into<BoxError>) -> Self {
        Self::Permanent(e.into())
    }

    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }
}

/// A lost or unobtainable database connection is [`HandlerError::Unavailable`]
/// (see [`is_connection_error`]); any other database error (a constraint
/// violation, a serialization failure, a statement timeout) is
/// [`HandlerError::Transient`].
impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        if is_connection_error(&e) {
            Self::Unavailable(Box::new(e))
        } else {
            Self::Transient(Box::new(e))
        }
    }
}

/// Whether `e` means the database could not be reached or the connection was
/// lost (rather than a statement failing): I/O and TLS errors, pool timeouts
/// (an exhausted pool or an unreachable server), a closed pool, and the
/// SQLSTATEs of connection failures (class `08`), of a server shutting down
/// or terminating the session (`57P..`) and of too many connections
/// (`53300`). A protocol error is not counted: if a statement reliably
/// triggers one, treating it as an outage would requeue the event forever.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// Applies one kind of event to a service's state. Everything it writes goes
/// through `tx`, which also records the event as processed: both commit
/// together or neither does.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// What a handler learns before the event's transaction begins
    /// (`()` for nothing): see [`Self::prepare`].
    type Prepared: Default + Send + Sync + 'static;

    /// Writes a handler leaves for the end of the transaction (`()` for
    /// none): [`Self::finish`] makes them once for all of the transaction's
    /// events, so the row locks they take (counters, say) are held from
    /// then until the commit only, and taken in one statement, in one order.
    type Deferred: Default + Send;

    /// What [`Self::finish`] hands to [`Self::committed`] once the
    /// transaction has committed (`()` for nothing): what only the
    /// statements of the transaction learnt, such as the numbers they gave.
    type Finished: Default + Send;

    /// Runs before the event's transaction, concurrently with the other
    /// deliveries in flight, and may run again for a redelivery: the place
    /// for reads from other services, which inside the transaction would
    /// hold its connection, its locks and its batch while they wait. Its
    /// errors count as the handler's, unless the event turns out to have
    /// been applied already: a duplicate needs no preparation.
    async fn prepare(&self, _envelope: &Envelope) -> Result<Self::Prepared, HandlerError> {
        Ok(Self::Prepared::default())
    }

    /// Applies `envelope`, writing through `tx` now or into `deferred`.
    /// What it deferred is dropped with its writes if it fails.
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        envelope: &Envelope,
        prepared: &Self::Prepared,
        deferred: &mut Self::Deferred,
    ) -> Result<(), HandlerError>;

    /// Makes the writes the transaction's handlers deferred, one entry per
    /// event applied, in order; runs once per transaction, before commit.
    async fn finish(
        &self,
        _tx: &mut Transaction<'_, Postgres>,
        _deferred: Vec<Self::Deferred>,
    ) -> Result<Self::Finished, HandlerError> {
        Ok(Self::Finished::default())
    }

    /// Runs after the commit of a transaction that applied `applied` (in
    /// order), with what its [`Self::finish`] returned: the place for
    /// effects outside the database that must not be seen before its
    /// writes are, such as invalidating a cache. Best effort: nothing
    /// retries it, so what it does must also expire.
    async fn committed(&self, _applied: &[&Envelope], _finished: Self::Finished) {}

    /// Whether [`Self::handle`] may write for `envelope`, as prepared. In a
    /// shared transaction each event that may runs behind a savepoint of
    /// its own (two round trips more), so its failure undoes its writes
    /// alone; say no only for an event whose writes are all deferred to
    /// [`Self::finish`]. A statement failing in such a `handle` aborts the
    /// transaction, and its events run again one by one; but writes it made
    /// before returning another error would commit with the batch.
    fn writes_in_handle(&self, _envelope: &Envelope, _prepared: &Self::Prepared) -> bool {
        true
    }

    /// Whether `envelope`, as prepared, may share a transaction with other
    /// events ([`crate::group_commit`]). Say no for an event whose handler
    /// may take long (it waits on another service, it writes for many
    /// users): in a batch it would hold up the others and their locks.
    fn batchable(&self, _envelope: &Envelope, _prepared: &Self::Prepared) -> bool {
        true
    }
}

/// Consumes one service queue until shutdown, supervising the connection.
pub struct Consumer<H> {
    pool: PgPool,
    amqp_url: String,
    topology: Topology,
    prefetch: u16,
    handler: Arc<H>,
    pause: Mutex<Pause>,
}

/// What became of an event that did not fail.
enum Applied {
    Fresh,
    /// Applied before: a redelivery.
    Duplicate,
}

impl Applied {
    /// The `outcome` of `events_consumed`.
    fn counted(&self) -> &'static str {
        match self {
            Self::Fresh => "ok",
            Self::Duplicate => "duplicate",
        }
    }
}

/// The `error_type` of the processing histogram ("" for none).
fn error_type<T>(result: &Result<T, HandlerError>) -> &'static str {
    match result {
        Ok(_) => "",
        Err(HandlerError::Unavailable(_)) => "unavailable",
        Err(HandlerError::Transient(_)) => "transient",
        Err(HandlerError::Permanent(_)) => "permanent",
    }
}

/// One failed event as it is sent again: its bytes, its properties (the
/// routing key kept in a header, since a copy sent to a queue directly
/// arrives under the queue's name) and its failed runs so far.
struct Resend<'a> {
    data: Cow<'a, [u8]>,
    properties: BasicProperties,
    attempts: u32,
}

impl<'a> Resend<'a> {
    /// A delivery carrying one event (or bytes that are not events), as it came.
    fn of_delivery(delivery: &'a Delivery) -> Self {
        Self {
            data: Cow::Borrowed(&delivery.data),
            properties: keeping_routing_key(delivery),
            attempts: attempts(&delivery.properties),
        }
    }

    /// One event of a batch, as a message of its own: what the relay would
    /// have sent for it alone. Runs are counted on single messages only
    /// (a failed event always leaves its batch), so it starts at none; a
    /// batch redelivered whole runs its events again from there.
    fn of_event(envelope: &Envelope) -> Self {
        let properties = message::single(
            &envelope.event_id,
            &envelope.r#type,
            &envelope.producer,
            (&envelope.traceparent, &envelope.tracestate),
        );
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            ROUTING_KEY_HEADER.into(),
            broker::string_value(&envelope.r#type),
        );
        Self {
            data: Cow::Owned(envelope.encode_to_vec()),
            properties: properties.with_headers(headers),
            attempts: 0,
        }
    }
}

/// Publishes `data` and waits for the broker's confirm; a nack is an error.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    data: &[u8],
    properties: BasicProperties,
) -> Result<(), EventsError> {
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            data,
            properties,
        )
        .await?
        .await?;
    if confirmation.is_ack() {
        Ok(())
    } else {
        Err(EventsError::Nacked)
    }
}

async fn ack(delivery: &Delivery) -> Result<(), EventsError> {
    delivery.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Hands a delivery back to the broker whole, for another try.
async fn requeue(delivery: &Delivery) -> Result<(), EventsError> {
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    delivery.acker.nack(requeue).await?;
    Ok(())
}

impl<H: EventHandler> Consumer<H> {
    pub fn new(pool: PgPool, amqp_url: impl Into<String>, topology: Topology, handler: H) -> Self {
        Self {
            pool,
            amqp_url: amqp_url.into(),
            topology,
            prefetch: 32,
            handler: Arc::new(handler),
            pause: Mutex::new(Pause::new(Pause::FIRST, Pause::MAX)),
        }
    }

    /// Unacked deliveries in flight, handled concurrently (default 32).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// The pause before requeueing a delivery that met an unavailable
    /// dependency: `first`, doubling while the outage lasts, up to `max`
    /// (default 500 ms up to 30 s).
    pub fn unavailable_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.pause = Mutex::new(Pause::new(first, max));
        self
    }

    /// Consumes until `shutdown` is cancelled, then drains: stops taking
    /// deliveries, finishes and acks those in flight, cancels and closes.
    /// Deliveries prefetched but not started go back to the queue on close.
    pub async fn run(self, shutdown: CancellationToken) {
        let retiring = tokio::spawn(crate::legacy::retire_until_done(
            self.amqp_url.clone(),
            self.topology.clone(),
            shutdown.clone(),
        ));
        let mut backoff = Backoff::new();
        while !shutdown.is_cancelled() {
            match self.open().await {
                Ok((connection, channel)) => {
                    backoff.reset();
                    let result = self.consume(&connection, &channel, &shutdown).await;
                    broker::close_channel(&channel, "consumer stopping").await;
                    let _ = connection.close(200, "consumer stopping".into()).await;
                    match result {
                        Ok(()) if shutdown.is_cancelled() => break,
                        Ok(()) => {
                            tracing::warn!(queue = %self.topology.queue, "consumer cancelled by the broker, reconnecting");
                        }
                        Err(e) => {
                            tracing::warn!(queue = %self.topology.queue, error = %e, "consumer lost its connection, reconnecting");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %self.topology.queue, error = %e, "consumer cannot reach the broker");
                }
            }
            if sleep_or_cancelled(backoff.next_delay(), &shutdown).await {
                break;
            }
        }
        let _ = retiring.await;
        tracing::info!(queue = %self.topology.queue, "consumer stopped");
    }

    async fn open(&self) -> Result<(Connection, Channel), EventsError> {
        let name = format!("consumer:{}", self.topology.queue);
        let connection = broker::connect(&self.amqp_url, &name).await?;
        let channel = connection.create_channel().await?;
        self.topology.declare(&channel).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        // Retries and parked messages are republished on this channel and
        // must be confirmed before the original is acked.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((connection, channel))
    }

    /// Handles deliveries until shutdown (then drains) or until the
    /// connection fails.
    async fn consume(
        &self,
        connection: &Connection,
        channel: &Channel,
        shutdown: &CancellationToken,
    ) -> Result<(), EventsError> {
        // A channel of its own: a refused sample closes it, not the one
        // deliveries arrive on.
        let sampling = connection.create_channel().await?;
        let consumed = self.consume_on(channel, &sampling, shutdown).await;
        broker::close_channel(&sampling, "consumer stopping").await;
        consumed
    }

    async fn consume_on(
        &self,
        channel: &Channel,
        sampling: &Channel,
        shutdown: &CancellationToken,
    ) -> Result<(), EventsError> {
        let consumer = channel
            .basic_consume(
                self.topology.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let tag = consumer.tag();
        let mut failure = None;
        let group = GroupCommit::new(
            self.pool.clone(),
            Arc::clone(&self.handler),
            &self.topology.queue,
            usize::from(self.prefetch),
        );
        let consuming = consumer
            .take_until(shutdown.cancelled())
            .filter_map(|delivery| {
                let delivery = delivery.map_err(|e| failure = Some(e)).ok();
                async move { delivery }
            })
            .for_each_concurrent(usize::from(self.prefetch), |delivery| {
                self.settle(channel, &group, delivery, shutdown)
            });
        // The transactions and the sampler never end by themselves:
        // consuming decides when this does.
        tokio::select! {
            () = consuming => {}
            () = group.run() => {}
            () = consumer_metrics::sample_queue_depth(sampling, &self.topology.queue) => {}
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        if shutdown.is_cancelled() {
            let _ = channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await;
        }
        Ok(())
    }

    /// Applies one delivery and settles it with the broker. Errors here only
    /// get logged: an unacked delivery comes back when the channel closes.
    async fn settle(
        &self,
        channel: &Channel,
        group: &GroupCommit<H>,
        delivery: Delivery,
        shutdown: &CancellationToken,
    ) {
        let decoded = match message::decode(&delivery.properties, &delivery.data) {
            Ok(Events::Batch(envelopes)) => {
                return self
                    .settle_batch(channel, group, &delivery, envelopes, shutdown)
                    .await;
            }
            Ok(Events::One(envelope)) => Ok(Arc::from(envelope)),
            Err(e) => Err(e),
        };
        let span = delivery_span(&self.topology.queue, &delivery, decoded.as_deref().ok());
        let started = Instant::now();
        async {
            let applied = match decoded {
                Ok(envelope) => self.apply(group, envelope).await,
                // Not an event at all (nor a batch of them): parked whole.
                Err(e) => Err(HandlerError::permanent(e)),
            };
            let error_type = error_type(&applied);
            let settled = match applied {
                Ok(applied) => {
                    self.lock_pause().reset();
                    ack(&delivery)
                        .await
                        .map(|()| self.count(&routing_key(&delivery), applied.counted()))
                }
                Err(error) => {
                    Span::current().record("otel.status_code", "ERROR");
                    self.send_delivery_away(channel, &delivery, error, shutdown)
                        .await
                }
            };
            if let Err(e) = settled {
                self.unsettled(&e);
            }
            consumer_metrics::observe_processing(&self.topology.queue, started, error_type);
        }
        .instrument(span)
        .await;
    }

    /// A delivery of several events: each is applied as if it had come
    /// alone, under a span of its own, and shares transactions with the
    /// rest; one that fails leaves alone (to a retry queue, the DLQ, or back
    /// to this queue) and spends no other's attempts. The delivery is acked
    /// once every event is applied or sent away. If one could not be sent,
    /// the whole delivery goes back to the queue: those applied are then
    /// duplicates, and those sent away run again (idempotently) as well.
    async fn settle_batch(
        &self,
        channel: &Channel,
        group: &GroupCommit<H>,
        delivery: &Delivery,
        envelopes: Vec<Envelope>,
        shutdown: &CancellationToken,
    ) {
        let settled = futures::future::join_all(
            envelopes
                .into_iter()
                .map(|envelope| self.settle_event(channel, group, envelope, shutdown)),
        )
        .await;
        let settled = if settled.iter().all(|sent| *sent) {
            ack(delivery).await
        } else {
            requeue(delivery).await
        };
        if let Err(e) = settled {
            self.unsettled(&e);
        }
    }

    /// Applies one event of a batch delivery, sending it away alone if it
    /// fails; returns whether it is settled (applied or sent).
    async fn settle_event(
        &self,
        channel: &Channel,
        group: &GroupCommit<H>,
        envelope: Envelope,
        shutdown: &CancellationToken,
    ) -> bool {
        let span = event_span(&self.topology.queue, &envelope);
        let started = Instant::now();
        let envelope = Arc::new(envelope);
        async {
            let applied = self.apply(group, Arc::clone(&envelope)).await;
            let error_type = error_type(&applied);
            let counted = match applied {
                Ok(applied) => {
                    self.lock_pause().reset();
                    Ok(applied.counted())
                }
                Err(error) => {
                    Span::current().record("otel.status_code", "ERROR");
                    let resend = Resend::of_event(&envelope);
                    self.send_away(channel, &resend, error, shutdown).await
                }
            };
            consumer_metrics::observe_processing(&self.topology.queue, started, error_type);
            match counted {
                Ok(outcome) => {
                    self.count(&envelope.r#type, outcome);
                    true
                }
                Err(e) => {
                    tracing::warn!(queue = %self.topology.queue, error = %e, "a failed event of a batch was not sent away; the batch will be redelivered");
                    false
                }
            }
        }
        .instrument(span)
        .await
    }

    fn unsettled(&self, error: &EventsError) {
        tracing::warn!(queue = %self.topology.queue, %error, "delivery not settled; it will be redelivered");
    }

    fn count(&self, routing_key: &str, outcome: &str) {
        metrics::get()
            .events_consumed
            .with_label_values(&[self.topology.queue.as_str(), routing_key, outcome])
            .inc();
    }

    async fn apply(
        &self,
        group: &GroupCommit<H>,
        envelope: Arc<Envelope>,
    ) -> Result<Applied, HandlerError> {
        consumer_metrics::observe_lag(&self.topology.queue, &envelope);
        let event_id = Uuid::parse_str(&envelope.event_id).map_err(HandlerError::permanent)?;
        // The request that caused the event: on the consumer's log lines,
        // and on the calls its handler makes.
        Span::current().record("request_id", envelope.request_id.as_str());
        Ok(match group.apply(event_id, envelope).await? {
            true => Applied::Fresh,
            false => Applied::Duplicate,
        })
    }

    fn lock_pause(&self) -> std::sync::MutexGuard<'_, Pause> {
        self.pause.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a failed delivery away whole and acks it; if the copy may not
    /// have arrived, hands the delivery back to the queue instead.
    async fn send_delivery_away(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        error: HandlerError,
        shutdown: &CancellationToken,
    ) -> Result<(), EventsError> {
        let resend = Resend::of_delivery(delivery);
        match self.send_away(channel, &resend, error, shutdown).await {
            Ok(outcome) => {
                ack(delivery).await?;
                self.count(&routing_key(delivery), outcome);
                Ok(())
            }
            Err(e) => requeue(delivery).await.and(Err(e)),
        }
    }

    /// Sends a failed event's copy where its error takes it, confirmed:
    /// back to this queue after the pause if a dependency is down, else to
    /// its next retry queue or the DLQ. Returns the outcome to count; an
    /// error means the copy may not have arrived, and the original must go
    /// back to the queue instead.
    async fn send_away(
        &self,
        channel: &Channel,
        resend: &Resend<'_>,
        error: HandlerError,
        shutdown: &CancellationToken,
    ) -> Result<&'static str, EventsError> {
        match error {
            HandlerError::Unavailable(e) => {
                self.pause_and_requeue(channel, resend, &e, shutdown)
                    .await?;
                Ok("requeued")
            }
            error => self.retry_or_park(channel, resend, error).await,
        }
    }

    /// A dependency is down: waits out the consumer-wide pause (cut short by
    /// shutdown), then puts the event back in the queue as it came, its
    /// `x-attempts` untouched. While waiting it holds its prefetch slot, so
    /// an outage also stops the consumer from taking more deliveries.
    async fn pause_and_requeue(
        &self,
        channel: &Channel,
        resend: &Resend<'_>,
        error: &BoxError,
        shutdown: &CancellationToken,
    ) -> Result<(), EventsError> {
        let now = Instant::now();
        let (until, started) = self.lock_pause().unavailable(now);
        let queue = self.topology.queue.as_str();
        match started {
            Some(pause) => {
                tracing::warn!(queue, error = %error, ?pause, "a dependency of the consumer is unavailable; pausing, then requeueing");
            }
            None => {
                tracing::debug!(queue, error = %error, "a dependency of the consumer is unavailable; requeueing after the pause");
            }
        }
        sleep_or_cancelled(until.saturating_duration_since(now), shutdown).await;
        // Back to the queue as a new message rather than a nack: the queue
        // counts every nacked redelivery towards its delivery limit, and
        // an outage must not park what it only delayed.
        publish_confirmed(channel, "", queue, &resend.data, resend.properties.clone()).await
    }

    /// Republishes a failed event to its next retry queue or the DLQ.
    async fn retry_or_park(
        &self,
        channel: &Channel,
        resend: &Resend<'_>,
        error: HandlerError,
    ) -> Result<&'static str, EventsError> {
        let attempts = resend.attempts.saturating_add(1);
        let (exchange, routing_key) = match &error {
            // Unavailable is requeued before it gets here; were it not, a
            // retry is the safe reading.
            HandlerError::Transient(_) | HandlerError::Unavailable(_) => {
                match self.topology.retry_queue_after(attempts) {
                    Some(retry_queue) => (String::new(), retry_queue),
                    None => self.dead_letter_route(),
                }
            }
            HandlerError::Permanent(_) => self.dead_letter_route(),
        };
        let parked = exchange == self.topology.dead_letter_exchange();
        if parked {
            tracing::error!(queue = %self.topology.queue, attempts, %error, "event parked in the dead-letter queue");
        } else {
            tracing::warn!(queue = %self.topology.queue, attempts, %error, "event handling failed, will retry");
        }
        let properties = with_attempts(&resend.properties, attempts, &error.to_string());
        publish_confirmed(channel, &exchange, &routing_key, &resend.data, properties).await?;
        Ok(if parked { "dead_lettered" } else { "retried" })
    }

    fn dead_letter_route(&self) -> (String, String) {
        (
            self.topology.dead_letter_exchange(),
            self.topology.queue.clone(),
        )
    }
}

/// The consumer-wide pause while a dependency is unavailable. Every delivery
/// that finds it down waits until the same deadline; the first to find it
/// still down after the deadline doubles the pause (up to `max`) and sets the
/// next one, so the pause grows per round of probes, not per delivery in
/// flight. Any success resets it.
#[derive(Debug)]
struct Pause {
    delays: Backoff,
    /// Whether a pause is on (a dependency was last seen down).
    paused: bool,
    until: Instant,
}

impl Pause {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    fn new(first: Duration, max: Duration) -> Self {
        Self {
            delays: Backoff::between(first, max),
            paused: false,
            until: Instant::now(),
        }
    }

    /// A delivery found a dependency unavailable at `now`: returns until when
    /// it waits, and the new pause if this started or grew one.
    fn unavailable(&mut self, now: Instant) -> (Instant, Option<Duration>) {
        if self.paused && now < self.until {
            return (self.until, None);
        }
        // Jittered, so replicas that met the same outage retry apart.
        let pause = self.delays.next_delay();
        self.paused = true;
        self.until = now + pause;
        (self.until, Some(pause))
    }

    fn reset(&mut self) {
        self.paused = false;
        self.delays.reset();
    }
}

/// One `process` span per delivery, a child of the context the message
/// carries (AMQP headers, else the envelope's fields): the consumer continues
/// the trace of the request that raised the event.
fn delivery_span(queue: &str, delivery: &Delivery, envelope: Option<&Envelope>) -> Span {
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let span = process_span(queue, &routing_key(delivery), &message_id);
    let parent = crate::trace_headers::from_amqp_headers(delivery.properties.headers().as_ref())
        .or_else(|| envelope.and_then(envelope_context));
    if let Some(cx) = parent {
        let _ = span.set_parent(cx);
    }
    span
}

/// The `process` span of one event of a batch delivery: a child of the
/// context its envelope carries (its publish span's), as if it had come alone.
fn event_span(queue: &str, envelope: &Envelope) -> Span {
    let span = process_span(queue, &envelope.r#type, &envelope.event_id);
    if let Some(cx) = envelope_context(envelope) {
        let _ = span.set_parent(cx);
    }
    span
}

fn process_span(queue: &str, routing_key: &str, message_id: &str) -> Span {
    tracing::info_span!(
        "process",
        otel.name = %format_args!("{queue} process"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "rabbitmq",
        messaging.operation = "process",
        messaging.destination.name = %queue,
        messaging.rabbitmq.destination.routing_key = %routing_key,
        messaging.message.id = %message_id,
        request_id = Empty,
    )
}

/// The trace context an envelope carries, if it is a valid one.
fn envelope_context(envelope: &Envelope) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = trace_context::from_strings(&envelope.traceparent, &envelope.tracestate);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The routing key the event was published with: a retried delivery comes
/// back from its retry queue under the queue's name, the original is kept in
/// a header.
fn routing_key(delivery: &Delivery) -> String {
    let kept = delivery.properties.headers().as_ref().and_then(|headers| {
        match headers.inner().get(ROUTING_KEY_HEADER) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        }
    });
    kept.unwrap_or_else(|| delivery.routing_key.to_string())
}

/// Failed runs so far, from the `x-attempts` header (absent: none).
pub fn attempts(properties: &BasicProperties) -> u32 {
    let value = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(ATTEMPTS_HEADER).cloned());
    let n = match value {
        Some(AMQPValue::ShortShortInt(n)) => i64::from(n),
        Some(AMQPValue::ShortShortUInt(n)) => i64::from(n),
        Some(AMQPValue::ShortInt(n)) => i64::from(n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(n),
        Some(AMQPValue::LongInt(n)) => i64::from(n),
        Some(AMQPValue::LongUInt(n)) => i64::from(n),
        Some(AMQPValue::LongLongInt(n)) => n,
        _ => 0,
    };
    u32::try_from(n).unwrap_or(0)
}

/// The delivery's properties for a copy of it, its routing key kept in a
/// header (a message republished to a queue directly arrives under the
/// queue's name), without the broker's own bookkeeping of the original.
pub(crate) fn keeping_routing_key(delivery: &Delivery) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(original) = delivery.properties.headers() {
        for (name, value) in original.inner() {
            if !BROKER_HEADERS.contains(&name.as_str()) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        broker::string_value(&routing_key(delivery)),
    );
    delivery.properties.clone().with_headers(headers)
}

/// Headers the broker sets on a delivery: a copy is a new message.
const BROKER_HEADERS: &[&str] = &[
    "x-delivery-count",
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
];

fn with_attempts(properties: &BasicProperties, attempts: u32, last_error: &str) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(attempts)),
    );
    // Header values are capped to keep a huge error message out of the broker.
    let last_error: String = last_error.chars().take(512).collect();
    headers.insert(LAST_ERROR_HEADER.into(), broker::string_value(&last_error));
    properties.clone().with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_pause_is_shared_grows_per_round_caps_and_resets() {
        let t0 = Instant::now();
        let mut pause = Pause::new(ms(500), ms(1500));
        // Each pause is its base plus up to as much again of jitter.
        let within = |got: Option<Duration>, base: u64| {
            let got = got.expect("a new pause");
            assert!(
                (ms(base)..ms(2 * base)).contains(&got),
                "{got:?} for {base}"
            );
            got
        };
        let (until, first) = pause.unavailable(t0);
        let first = within(first, 500);
        assert_eq!(until, t0 + first);
        // Others failing within the pause wait for the same deadline.
        assert_eq!(pause.unavailable(t0 + ms(100)), (until, None));
        // Still down after it: the pause doubles, then stops at the cap.
        let later = until;
        let (_, second) = pause.unavailable(later);
        within(second, 1000);
        let mut now = later + ms(3000);
        for _ in 0..3 {
            let (until, capped) = pause.unavailable(now);
            assert_eq!(capped, Some(ms(1500)), "the cap holds, jitter included");
            now = until;
        }
        pause.reset();
        within(pause.unavailable(now).1, 500);
    }

    #[test]
    fn connection_failures_are_unavailable_and_statement_failures_transient() {
        let unavailable =
            |e: sqlx::Error| matches!(HandlerError::from(e), HandlerError::Unavailable(_));
        assert!(unavailable(sqlx::Error::PoolTimedOut));
        assert!(unavailable(sqlx::Error::PoolClosed));
        assert!(unavailable(sqlx::Error::WorkerCrashed));
        assert!(unavailable(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!unavailable(sqlx::Error::RowNotFound));
        assert!(!unavailable(sqlx::Error::Protocol(
            "unexpected message".into()
        )));
    }
}
