//! What a consumer reports about itself, named by the OpenTelemetry
//! messaging conventions: how long each delivery takes to settle, how old an
//! event is when its turn comes (the lag an operator alerts on), and how many
//! deliveries wait in the queue.

use std::time::Duration;

use chrono::Utc;
use lapin::{Channel, options::QueueDeclareOptions, types::FieldTable};
use quill_platform::{metrics, time};
use quill_proto::events::v1::Envelope;
use tokio::time::Instant;

/// `messaging.system` for every Quill consumer.
const MESSAGING_SYSTEM: &str = "rabbitmq";
/// How often a consumer asks the broker how many deliveries wait for it.
const DEPTH_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// One delivery settled `started` ago; `error_type` is empty when it was
/// applied (or a duplicate), else why not.
pub(crate) fn observe_processing(queue: &str, started: Instant, error_type: &str) {
    metrics::get()
        .messaging_process_duration
        .with_label_values(&[MESSAGING_SYSTEM, queue, "process", error_type])
        .observe(started.elapsed().as_secs_f64());
}

/// The age of `envelope`'s event as its consumer starts on it. A clock a
/// little ahead on the producer counts as no lag, not as a negative one.
pub(crate) fn observe_lag(queue: &str, envelope: &Envelope) {
    let Some(occurred_at) = envelope.occurred_at.as_ref().and_then(time::from_proto) else {
        return;
    };
    let age = (Utc::now() - occurred_at)
        .num_microseconds()
        .unwrap_or(0)
        .max(0);
    metrics::get()
        .messaging_consumer_lag
        .with_label_values(&[queue])
        .observe(age as f64 / 1e6);
}

/// Samples the queue's ready deliveries on `channel` at once and then every
/// few seconds, for as long as it is polled. A failed sample is skipped: the
/// consumer notices a broken channel on its own.
pub(crate) async fn sample_queue_depth(channel: &Channel, queue: &str) {
    let gauge = metrics::get()
        .messaging_consumer_lag_messages
        .with_label_values(&[queue]);
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    loop {
        match channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(declared) => gauge.set(i64::from(declared.message_count())),
            Err(e) => tracing::debug!(queue, error = %e, "queue depth not sampled"),
        }
        tokio::time::sleep(DEPTH_SAMPLE_INTERVAL).await;
    }
}
