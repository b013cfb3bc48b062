-- The transactional outbox (events written with the change they announce)
-- and the consumers' inbox; a copy of quill_platform::events::OUTBOX_AND_INBOX_SQL.
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
