-- The consumer now numbers its notifications itself, all of a transaction's
-- in one statement just before it commits (see repo/notifications.rs): the
-- counters it locks are held for that commit only, where the trigger held
-- each from its row's insert to the end of the transaction. The trigger
-- stays for rows inserted without a number (an instance still running the
-- previous release during a rollout), and now runs for those alone: its
-- condition is checked without calling the function.

DROP TRIGGER notifications_number ON notifications;

CREATE TRIGGER notifications_number
    BEFORE INSERT ON notifications
    FOR EACH ROW
    WHEN (NEW.seq IS NULL)
    EXECUTE FUNCTION notifications_number();
