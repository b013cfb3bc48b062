-- Mail is addressed to a user, and the address is read when the mail is
-- sent: events are consumed concurrently, so a comment's mail may be queued
-- before the author's user.registered has been applied here. Such mail now
-- waits for the address instead of being dropped, and an address changed
-- in the meantime is honoured. `recipient` stays for rows queued before.
ALTER TABLE outbox_mail ADD COLUMN user_id uuid;
ALTER TABLE outbox_mail ALTER COLUMN recipient DROP NOT NULL;
ALTER TABLE outbox_mail ADD CONSTRAINT outbox_mail_addressed
    CHECK (user_id IS NOT NULL OR recipient IS NOT NULL);

-- auth's version of the user row (users.updated_at, carried in every user
-- event): a late or redelivered older event never overwrites a newer address.
ALTER TABLE recipients ADD COLUMN version timestamptz NOT NULL DEFAULT '-infinity';
