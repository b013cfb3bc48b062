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

/// Tables every producing or consuming service needs. Each service copies
/// this into its own migrations; tests may execute it directly.
///
/// `outbox.payload` is the prost-encoded `Envelope`; the partial index keeps
/// the relay's "oldest unsent rows" scan cheap however many sent rows remain.
/// `processed_events` is the consumer's inbox: one row per applied event.
pub const OUTBOX_AND_INBOX_SQL: &str = r#"
CREATE TABLE IF NOT EXISTS outbox (
    id           uuid PRIMARY KEY,
    routing_key  text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unpublished_idx
    ON outbox (created_at) WHERE published_at IS NULL;
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     uuid PRIMARY KEY,
    consumer     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
"#;

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
