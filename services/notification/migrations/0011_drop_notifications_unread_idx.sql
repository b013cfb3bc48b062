-- no-transaction
-- Replaced by notifications_unread_seq_idx: see 0009.
DROP INDEX CONCURRENTLY IF EXISTS notifications_unread_idx;
