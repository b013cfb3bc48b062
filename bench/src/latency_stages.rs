//! Where a REST write -> SSE latency goes, read off timestamps the system
//! keeps anyway: the comment's outbox row (`created_at`, when content's
//! transaction began) and the author's notification (`created_at`, when the
//! consumer's transaction began). Both databases live on one PostgreSQL
//! server on this machine, as does the bench, so the clocks agree.

use std::time::Duration;

use anyhow::ensure;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// When each comment's transaction began, newest first.
const COMMENTS_WRITTEN: &str = "SELECT created_at FROM outbox WHERE routing_key = 'comment.added'
     ORDER BY created_at DESC LIMIT $1";
/// When the consumer's transaction for each comment began, newest first.
const COMMENTS_NOTIFIED: &str = "SELECT created_at FROM notifications WHERE kind = 'comment'
     ORDER BY seq DESC LIMIT $1";

/// Per sample, the time spent in each stage, in order.
#[derive(Default)]
pub struct Stages {
    /// The gateway, and content up to its write's transaction.
    pub to_write: Vec<Duration>,
    /// The commit, the outbox relay, the broker and the consumer's queue.
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
    let consumed = last_times(notification_db, COMMENTS_NOTIFIED, sent.len()).await?;
    ensure!(
        writes.len() == sent.len() && consumed.len() == sent.len(),
        "{} comments sent, {} written, {} notified",
        sent.len(),
        writes.len(),
        consumed.len()
    );
    let between = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).to_std().unwrap_or_default();
    let mut stages = Stages::default();
    for (i, (&sent, &latency)) in sent.iter().zip(latencies).enumerate() {
        let arrived = sent + latency;
        stages.to_write.push(between(sent, writes[i]));
        stages.to_consumer.push(between(writes[i], consumed[i]));
        stages.to_stream.push(between(consumed[i], arrived));
    }
    Ok(stages)
}

/// The newest `n` timestamps `query` selects, oldest first.
async fn last_times(
    url: &str,
    query: &'static str,
    n: usize,
) -> anyhow::Result<Vec<DateTime<Utc>>> {
    let pool = PgPool::connect(url).await?;
    let mut times: Vec<DateTime<Utc>> = sqlx::query_scalar(query)
        .bind(i64::try_from(n)?)
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    times.reverse();
    Ok(times)
}
