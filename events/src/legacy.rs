//! Retiring the classic queues an older Quill declared for a consuming
//! service (`<queue>` and `<queue>.retry.<n>`), now that its events go to
//! quorum queues under new names (`catalog`).
//!
//! Nothing may be lost on the way, also while old and new replicas run side
//! by side in a rolling upgrade:
//!
//! - The old queue is unbound first, so the exchange routes nothing new to
//!   it; events in flight reach the new queue too, and the inbox applies
//!   each once whichever queue it came from.
//! - While an old replica still consumes the old queue, nothing is moved or
//!   deleted: it holds unacked deliveries there and publishes its retries to
//!   the old retry queues (a retry published to a deleted queue would be
//!   confirmed and dropped). The retirer looks again later.
//! - Then the retry queues are emptied into the new queue and deleted, and
//!   the old queue last, since expiring retries dead-letter into it. Every
//!   message is moved by confirm-then-ack, and a queue is deleted only if
//!   empty and unconsumed; `basic_get` hands each message to one replica,
//!   so replicas may retire at once.
//!
//! The old DLQ is left alone: what is parked there needs an operator.
//!
//! AMQP answers a question about a missing queue by closing the channel,
//! which lapin logs as an error; so a queue is looked at by declaring it
//! as the older Quill did (creating it empty if it is gone, to be deleted
//! at once) rather than passively.

use std::time::Duration;

use lapin::{
    Channel, Connection, Queue,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};
use quill_platform::shutdown::{CancellationToken, sleep_or_cancelled};

use crate::{EventsError, Topology, broker, consumer::keeping_routing_key};

/// How long the retirer waits before looking again while an old replica
/// still consumes, or after a failure.
const LOOK_AGAIN: Duration = Duration::from_secs(30);

/// Retry queues an older Quill may have declared beyond this topology's:
/// the default schedule's (`EVENTS_RETRY_DELAYS_MS`).
const OLD_RETRY_QUEUES: usize = 3;

/// Where a retirement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The old queues are gone; `moved` messages went to the new queue.
    Done { moved: u64 },
    /// An older replica still consumes the old queue.
    OldReplicasRun,
    /// A queue took a message between being emptied and deleted.
    NotEmptyYet,
}

/// Retires `topology`'s old queues, looking again every [`LOOK_AGAIN`]
/// until they are gone or `shutdown`. Runs beside the consumer, so a
/// retirement that cannot finish never keeps the new queue from being
/// consumed.
pub async fn retire_until_done(url: String, topology: Topology, shutdown: CancellationToken) {
    if topology.legacy_queue.is_none() {
        return;
    }
    loop {
        let outcome = tokio::select! {
            outcome = retire(&url, &topology) => outcome,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(Progress::Done { moved }) => {
                if moved > 0 {
                    tracing::info!(queue = %topology.queue, moved, "retired the classic queues of an older Quill");
                }
                return;
            }
            Ok(waiting) => {
                tracing::info!(queue = %topology.queue, ?waiting, "the classic queues of an older Quill are not retired yet");
            }
            Err(e) => {
                tracing::warn!(queue = %topology.queue, error = %e, "cannot retire the classic queues of an older Quill yet");
            }
        }
        if sleep_or_cancelled(LOOK_AGAIN, &shutdown).await {
            return;
        }
    }
}

/// One attempt at retiring `topology`'s old queues (see the module docs).
pub async fn retire(url: &str, topology: &Topology) -> Result<Progress, EventsError> {
    let Some(old) = &topology.legacy_queue else {
        return Ok(Progress::Done { moved: 0 });
    };
    let connection = broker::connect(url, &format!("retirer:{old}")).await?;
    let outcome = match connection.create_channel().await {
        Ok(channel) => {
            let outcome = retire_on(&connection, &channel, topology, old).await;
            broker::close_channel(&channel, "retired").await;
            outcome
        }
        Err(e) => Err(e.into()),
    };
    let _ = connection.close(200, "retired".into()).await;
    outcome
}

async fn retire_on(
    connection: &Connection,
    channel: &Channel,
    topology: &Topology,
    old: &str,
) -> Result<Progress, EventsError> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let main = look(connection, old, old_main_arguments(topology, old)).await?;
    for key in &topology.bindings {
        channel
            .queue_unbind(
                old.into(),
                topology.exchange.as_str().into(),
                key.as_str().into(),
                FieldTable::default(),
            )
            .await?;
    }
    if main.consumer_count() > 0 {
        return Ok(Progress::OldReplicasRun);
    }
    let mut moved = 0;
    let retry_queues = topology.retry_delays.len().max(OLD_RETRY_QUEUES);
    for n in 1..=retry_queues {
        let queue = format!("{old}.retry.{n}");
        look(connection, &queue, old_retry_arguments(topology, old, n)).await?;
        moved += empty_into(channel, &queue, &topology.queue).await?;
        if !delete_if_idle(connection, &queue).await? {
            return Ok(Progress::NotEmptyYet);
        }
    }
    moved += empty_into(channel, old, &topology.queue).await?;
    if !delete_if_idle(connection, old).await? {
        return Ok(Progress::NotEmptyYet);
    }
    Ok(Progress::Done { moved })
}

/// The queue as it stands, declared as the older Quill declared it. If it
/// exists with other arguments (another retry schedule), the broker says
/// so by closing the channel: it exists, so ask passively on another. Both
/// on channels of their own, so the one moving messages stays open.
async fn look(
    connection: &Connection,
    queue: &str,
    arguments: FieldTable,
) -> Result<Queue, EventsError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declaring = connection.create_channel().await?;
    if let Ok(found) = declaring
        .queue_declare(queue.into(), durable, arguments)
        .await
    {
        broker::close_channel(&declaring, "looked").await;
        return Ok(found);
    }
    let probe = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..durable
    };
    let found = probe
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    broker::close_channel(&probe, "looked").await;
    Ok(found)
}

/// Moves every message of `from` to `to`, each confirmed before it is
/// acked; how many.
async fn empty_into(channel: &Channel, from: &str, to: &str) -> Result<u64, EventsError> {
    let mut moved = 0;
    while let Some(message) = channel
        .basic_get(from.into(), BasicGetOptions::default())
        .await?
    {
        let delivery = message.delivery;
        let confirmation = channel
            .basic_publish(
                "".into(),
                to.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                keeping_routing_key(&delivery),
            )
            .await?
            .await?;
        if !confirmation.is_ack() {
            return Err(EventsError::Nacked);
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Deletes `queue` if it is empty and nobody consumes it; `false` if it is
/// not (the broker refuses on the channel, so on one of its own).
async fn delete_if_idle(connection: &Connection, queue: &str) -> Result<bool, EventsError> {
    let channel = connection.create_channel().await?;
    let idle = QueueDeleteOptions {
        if_empty: true,
        if_unused: true,
        ..QueueDeleteOptions::default()
    };
    let deleted = channel.queue_delete(queue.into(), idle).await.is_ok();
    if deleted {
        broker::close_channel(&channel, "deleted").await;
    }
    Ok(deleted)
}

/// The arguments an older Quill declared its main queue with.
fn old_main_arguments(topology: &Topology, old: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        broker::string_value(&topology.dead_letter_exchange()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        broker::string_value(old),
    );
    arguments
}

/// The arguments an older Quill declared its retry queue `n` with, on the
/// retry schedule this process has (another schedule: see [`look`]).
fn old_retry_arguments(topology: &Topology, old: &str, n: usize) -> FieldTable {
    let mut arguments = FieldTable::default();
    if let Some(delay) = topology
        .retry_delays
        .get(n - 1)
        .or(topology.retry_delays.last())
    {
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    }
    arguments.insert("x-dead-letter-exchange".into(), broker::string_value(""));
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        broker::string_value(old),
    );
    arguments
}

/// Declares `topology`'s old queues as an older Quill did, bound as it
/// bound them: how the tests stage a broker to upgrade.
pub async fn declare_as_an_older_quill(
    channel: &Channel,
    topology: &Topology,
) -> Result<(), EventsError> {
    let Some(old) = &topology.legacy_queue else {
        return Ok(());
    };
    broker::declare_exchange(channel, &topology.exchange).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            old.as_str().into(),
            durable,
            old_main_arguments(topology, old),
        )
        .await?;
    for n in 1..=topology.retry_delays.len() {
        channel
            .queue_declare(
                format!("{old}.retry.{n}").as_str().into(),
                durable,
                old_retry_arguments(topology, old, n),
            )
            .await?;
    }
    for key in &topology.bindings {
        channel
            .queue_bind(
                old.as_str().into(),
                topology.exchange.as_str().into(),
                key.as_str().into(),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}
