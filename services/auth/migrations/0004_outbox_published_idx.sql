-- no-transaction
-- Retention (quill_events::Retention) deletes finished rows by age; this
-- keeps each sweep off a full scan. CONCURRENTLY, so writes go on while it
-- builds on a large table; one statement per file, outside a transaction,
-- as CONCURRENTLY requires.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_published_idx
    ON outbox (published_at) WHERE published_at IS NOT NULL;
