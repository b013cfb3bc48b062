-- Login limits ask whether a client address has signed in to an account
-- before (ended sessions included), on every attempt past the account's
-- failure budget.
CREATE INDEX sessions_by_user_ip ON sessions (user_id, ip);
