//! Retention: rows the backbone has finished with are deleted once they are
//! old enough, so `outbox` and `processed_events` (and a service's own
//! queues, such as notification's mail) do not grow forever.
//!
//! A published outbox row is kept a while for whoever debugs a delivery; an
//! inbox row (`processed_events`) must outlive every redelivery of its event
//! (retry delays, a broker outage), which is why both default to a week.
//! Deletes go in small batches, each its own statement, so a sweep never
//! holds long locks or bloats one transaction.

use std::time::Duration;

use quill_platform::shutdown::{CancellationToken, sleep_or_cancelled};
use sqlx::PgPool;
use tracing::Instrument;

/// Rows deleted per statement.
const BATCH: i64 = 1_000;

/// One kind of finished row: those of `table` whose `done_at` column is
/// older than `keep`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    table: &'static str,
    done_at: &'static str,
    keep: Duration,
}

/// Periodically deletes finished rows; runs as a service's background loop.
#[derive(Debug, Clone)]
pub struct Retention {
    pool: PgPool,
    every: Duration,
    rules: Vec<Rule>,
}

impl Retention {
    /// The backbone's own tables: published outbox rows and inbox rows older
    /// than `keep`, swept every `every`.
    pub fn backbone(pool: PgPool, keep: Duration, every: Duration) -> Self {
        Self {
            pool,
            every,
            rules: Vec::new(),
        }
        .keep("outbox", "published_at", keep)
        .keep("processed_events", "processed_at", keep)
    }

    /// Also deletes rows of `table` whose `done_at` is older than `keep`
    /// (unset `done_at`: not done, never deleted). Both are identifiers of
    /// our own schema, never input.
    pub fn keep(mut self, table: &'static str, done_at: &'static str, keep: Duration) -> Self {
        self.rules.push(Rule {
            table,
            done_at,
            keep,
        });
        self
    }

    /// Sweeps now, then every interval, until `shutdown` (which also cuts a
    /// long sweep short between two batches).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.sweep_until(&shutdown).await {
                tracing::warn!(error = %e, "retention sweep failed; will retry");
            }
            if sleep_or_cancelled(self.every, &shutdown).await {
                break;
            }
        }
    }

    /// Deletes every finished row that is old enough; returns how many.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        self.sweep_until(&CancellationToken::new()).await
    }

    async fn sweep_until(&self, shutdown: &CancellationToken) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        for rule in &self.rules {
            let deleted = self.sweep_rule(rule, shutdown).await?;
            if deleted > 0 {
                tracing::info!(
                    table = rule.table,
                    deleted,
                    "retention deleted finished rows"
                );
            }
            total += deleted;
        }
        Ok(total)
    }

    async fn sweep_rule(
        &self,
        rule: &Rule,
        shutdown: &CancellationToken,
    ) -> Result<u64, sqlx::Error> {
        let Rule {
            table,
            done_at,
            keep,
        } = *rule;
        let statement = format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM {table}
                 WHERE {done_at} < now() - make_interval(secs => $1)
                 LIMIT $2))"
        );
        let mut deleted = 0;
        loop {
            let batch = sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
                .bind(keep.as_secs_f64())
                .bind(BATCH)
                .execute(&self.pool)
                .instrument(crate::db_span("DELETE", table))
                .await?
                .rows_affected();
            deleted += batch;
            if batch < BATCH.unsigned_abs() || shutdown.is_cancelled() {
                return Ok(deleted);
            }
        }
    }
}
