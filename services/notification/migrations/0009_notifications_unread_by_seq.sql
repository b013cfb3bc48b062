-- no-transaction
-- The list of a user's notifications now follows their stream's order
-- (`seq`, commit order) rather than creation time, so one index,
-- (user_id, seq), serves both, and the unread ones get theirs by seq too.
-- The two creation-time indexes go (0010, 0011): one index fewer to write
-- for every notification. CONCURRENTLY, one statement per file, as it
-- requires. Not IF NOT EXISTS: a build that failed leaves an invalid index
-- of this name, and skipping it would let 0011 drop the only good one; the
-- rerun fails instead, for an operator to drop the invalid index.
CREATE INDEX CONCURRENTLY notifications_unread_seq_idx
    ON notifications (user_id, seq) WHERE read_at IS NULL;
