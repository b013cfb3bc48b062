//! Where a REST write -> SSE latency goes, read off timestamps the system
//! keeps anyway: the comment's outbox row (`created_at`, when content's
//! transaction began; `published_at`, when the relay's transaction that
//! claimed it began) and the author's notification (`created_at`, when the
//! consumer's transaction began). Both databases live on one PostgreSQL
//! server on this machine, as does the bench, so the clocks agree.

use std::time::Duration;

use anyhow::{bail, ensure};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// When each comment's transaction began, newest first.
const COMMENTS_WRITTEN: &str = "SELECT created_at FROM outbox WHERE routing_key = 'comment.added'
     ORDER BY created_at DESC, id DESC LIMIT $1";
/// When the relay claimed each comment's event, in the same order.
const COMMENTS_CLAIMED: &str = "SELECT published_at FROM outbox WHERE routing_key = 'comment.added'
     ORDER BY created_at DESC, id DESC LIMIT $1";
/// When the consumer's transaction for each comment began, newest first.
const COMMENTS_NOTIFIED: &str = "SELECT created_at FROM notifications WHERE kind = 'comment'
     ORDER BY seq DESC LIMIT $1";

/// Per sample, the time spent in each stage, in order.
#[derive(Default)]
pub struct Stages {
    /// The gateway, and content up to its write's transaction.
    pub to_write: Vec<Duration>,
    /// The write and its commit, and the outbox relay's wait for its next
    /// batch.
    pub to_relay: Vec<Duration>,
    /// The relay's claim and publish, the broker and the consumer's queue.
    pub to_consumer: Vec<Duration>,
    /// The consumer's transaction and commit, the `NOTIFY`, the stream to
    /// the gateway and the SSE response.
    pub to_stream: Vec<Duration>,
}

/// The stages of the last `sent.len()` comments: each was sent at `sent[i]`
/// and its notification arrived `latencies[i]` later. They are the last
/// comments on the system and its only notifications of a comment.
pub async fn measure(
    content_db: &str,
    notification_db: &str,
    sent: &[DateTime<Utc>],
    latencies: &[Duration],
) -> anyhow::Result<Stages> {
    let writes = last_times(content_db, COMMENTS_WRITTEN, sent.len()).await?;
    let claims = last_times(content_db, COMMENTS_CLAIMED, sent.len()).await?;
    let consumed = last_times(notification_db, COMMENTS_NOTIFIED, sent.len()).await?;
    ensure!(
        writes.len() == sent.len() && claims.len() == sent.len() && consumed.len() == sent.len(),
        "{} comments sent, {} written, {} claimed, {} notified",
        sent.len(),
        writes.len(),
        claims.len(),
        consumed.len()
    );
    let between = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).to_std().unwrap_or_default();
    let mut stages = Stages::default();
    for (i, (&sent, &latency)) in sent.iter().zip(latencies).enumerate() {
        let arrived = sent + latency;
        stages.to_write.push(between(sent, writes[i]));
        stages.to_relay.push(between(writes[i], claims[i]));
        stages.to_consumer.push(between(claims[i], consumed[i]));
        stages.to_stream.push(between(consumed[i], arrived));
    }
    Ok(stages)
}

/// The newest `n` timestamps `query` selects, oldest first. The relay marks
/// an event published once the broker has confirmed it, which can be after
/// the consumer applied it: a row not marked yet is read again a moment later.
async fn last_times(
    url: &str,
    query: &'static str,
    n: usize,
) -> anyhow::Result<Vec<DateTime<Utc>>> {
    let pool = PgPool::connect(url).await?;
    for _ in 0..50 {
        let times: Vec<Option<DateTime<Utc>>> = sqlx::query_scalar(query)
            .bind(i64::try_from(n)?)
            .fetch_all(&pool)
            .await?;
        if let Some(mut times) = times.into_iter().collect::<Option<Vec<_>>>() {
            pool.close().await;
            times.reverse();
            return Ok(times);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("some of the last {n} rows of {query:?} stayed NULL for a second")
}
