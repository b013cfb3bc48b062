-- no-transaction
-- Replaced by notifications_user_seq_idx (0007): see 0009.
DROP INDEX CONCURRENTLY IF EXISTS notifications_user_created_idx;
