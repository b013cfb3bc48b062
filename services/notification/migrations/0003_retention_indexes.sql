-- Retention deletes published outbox rows, inbox rows and finished mail by
-- age (quill_events::Retention); these keep each sweep off a full scan.
-- Built in the migration's transaction, which blocks writes to the tables
-- while it runs: on a large table, create them by hand first with
-- CREATE INDEX CONCURRENTLY under the same names (this is then a no-op).
CREATE INDEX IF NOT EXISTS outbox_published_idx
    ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS processed_events_processed_idx
    ON processed_events (processed_at);
CREATE INDEX IF NOT EXISTS outbox_mail_sent_idx
    ON outbox_mail (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_mail_failed_idx
    ON outbox_mail (failed_at) WHERE failed_at IS NOT NULL;
