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
    let row = OutboxRow::of(envelope)?;
    sqlx::query("INSERT INTO outbox (id, routing_key, payload) VALUES ($1, $2, $3)")
        .bind(row.id)
        .bind(row.routing_key)
        .bind(row.payload)
        .execute(conn)
        .instrument(crate::db_span("INSERT", "outbox"))
        .await?;
    Ok(())
}

/// An event as its outbox row holds it, for a use case that writes the row
/// in the very statement of its change (a data-modifying `WITH`, whose
/// parts commit together as one implicit transaction):
/// `INSERT INTO outbox (id, routing_key, payload) SELECT $n, $n+1, $n+2
/// FROM changed`. That is one round trip, where a transaction costs a
/// `BEGIN`, a statement per part and a `COMMIT`. Call [`written`] once the
/// statement has returned.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: Uuid,
    pub routing_key: String,
    pub payload: Vec<u8>,
}

impl OutboxRow {
    pub fn of(envelope: &Envelope) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: Uuid::parse_str(&envelope.event_id)
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            routing_key: envelope.r#type.clone(),
            payload: envelope.encode_to_vec(),
        })
    }

    /// The client span for the statement that writes this row, as
    /// [`enqueue`]'s is: `INSERT outbox`, the hop a trace crosses on its
    /// way to the broker.
    pub fn write_span(&self) -> tracing::Span {
        crate::db_span("INSERT", "outbox")
    }
}

/// Commits `tx`, which wrote outbox rows, and wakes this process's relays
/// to publish them now rather than at their next poll.
pub async fn commit(tx: Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    tx.commit().await?;
    written();
    Ok(())
}

/// Wakes this process's relays after a statement outside an explicit
/// transaction committed outbox rows (see [`OutboxRow`]).
pub fn written() {
    COMMITS.send_modify(|commits| *commits = commits.wrapping_add(1));
}

/// What a relay waits on between polls.
pub(crate) fn commits() -> watch::Receiver<u64> {
    COMMITS.subscribe()
}
