-- Each notification's place in its user's stream, `seq`, in commit order:
-- what a resuming stream (Last-Event-ID) reads after. Creation time could
-- not be that order: it is when the inserting transaction began, so two
-- transactions creating notifications for one user that commit in the
-- other order made a resume skip one or send one twice.
--
-- A per-user counter row hands out the numbers. Taking the next one locks
-- that row until the transaction ends, so a second transaction numbering
-- for the same user waits for the first to commit (or roll back) and so
-- numbers after it: for one user, higher seq means committed later. Gaps
-- are possible (a row skipped by ON CONFLICT DO NOTHING keeps its number);
-- order is all that is promised.
--
-- A trigger numbers every inserted row, whatever the statement: no insert
-- path can forget it, and instances still running the previous release
-- during a rollout (migrations run ahead of it) keep inserting without
-- failing. A statement inserting for many users (the new-article fan-out)
-- inserts them in user id order, so concurrent ones take the locks in one
-- order and cannot deadlock.
--
-- ADD COLUMN comes first: its exclusive lock holds writers off until the
-- backfill and the counters are committed, so none is numbered twice.

ALTER TABLE notifications ADD COLUMN seq bigint;

CREATE TABLE notification_cursors (
    user_id  uuid PRIMARY KEY,
    -- The seq of the user's latest notification.
    last_seq bigint NOT NULL
);

UPDATE notifications n
SET seq = numbered.seq
FROM (
    SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY created_at, id) AS seq
    FROM notifications
) numbered
WHERE n.id = numbered.id;

INSERT INTO notification_cursors (user_id, last_seq)
SELECT user_id, max(seq) FROM notifications GROUP BY user_id;

ALTER TABLE notifications ALTER COLUMN seq SET NOT NULL;

-- Resuming: the user's notifications after a seq, in order.
CREATE UNIQUE INDEX notifications_user_seq_idx ON notifications (user_id, seq);

CREATE FUNCTION notifications_number() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notification_cursors AS c (user_id, last_seq)
    VALUES (NEW.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET last_seq = c.last_seq + 1
    RETURNING c.last_seq INTO NEW.seq;
    RETURN NEW;
END
$$;

CREATE TRIGGER notifications_number
    BEFORE INSERT ON notifications
    FOR EACH ROW EXECUTE FUNCTION notifications_number();
