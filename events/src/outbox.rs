//! The transactional outbox: an event is a row written in the same database
//! transaction as the state change it announces, so both commit or neither
//! does. The relay publishes the rows later.

use prost::Message;
use quill_proto::events::v1::Envelope;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

/// `NOTIFY` channel announcing committed outbox rows to the relays.
pub const OUTBOX_CHANNEL: &str = "quill_outbox";

/// Records `envelope` for publication. Call it on the caller's transaction
/// (`enqueue(&mut tx, &envelope)`), next to the state change it announces.
pub async fn enqueue(conn: &mut PgConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
    let id = Uuid::parse_str(&envelope.event_id).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO outbox (id, routing_key, payload) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(&envelope.r#type)
        .bind(envelope.encode_to_vec())
        .execute(&mut *conn)
        .instrument(crate::db_span("INSERT", "outbox"))
        .await?;
    // Delivered at commit (and folded into one per transaction): an idle
    // relay publishes at once instead of at its next poll.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(OUTBOX_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}
