//! The transactional outbox: an event is a row written in the same database
//! transaction as the state change it announces, so both commit or neither
//! does. The relay publishes the rows later.

use std::sync::LazyLock;

use prost::Message;
use quill_proto::events::v1::Envelope;
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

/// Counts commits that wrote outbox rows in this process; every relay of
/// the process watches it. The relay runs beside the writers, so waking it
/// in-process costs the database nothing, where a `NOTIFY` in the writing
/// transaction would take PostgreSQL's cluster-wide notify lock at every
/// commit, serializing all writers' commits behind each other's WAL flush.
/// A row committed by another process is found by the relays' poll.
static COMMITS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Records `envelope` for publication. Call it on the caller's transaction
/// (`enqueue(&mut tx, &envelope)`), next to the state change it announces,
/// and end that transaction with [`commit`].
pub async fn enqueue(conn: &mut PgConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
    let id = Uuid::parse_str(&envelope.event_id).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO outbox (id, routing_key, payload) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(&envelope.r#type)
        .bind(envelope.encode_to_vec())
        .execute(conn)
        .instrument(crate::db_span("INSERT", "outbox"))
        .await?;
    Ok(())
}

/// Commits `tx`, which wrote outbox rows, and wakes this process's relays
/// to publish them now rather than at their next poll.
pub async fn commit(tx: Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    tx.commit().await?;
    COMMITS.send_modify(|commits| *commits = commits.wrapping_add(1));
    Ok(())
}

/// What a relay waits on between polls.
pub(crate) fn commits() -> watch::Receiver<u64> {
    COMMITS.subscribe()
}
