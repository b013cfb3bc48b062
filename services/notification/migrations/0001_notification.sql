-- In-app notifications, delivery preferences, the recipients read-model fed
-- by user.* events, mail waiting for the SMTP sender, and the event inbox.

CREATE TABLE notifications (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('welcome', 'new_follower', 'comment', 'favorite', 'new_article')),
    title          text NOT NULL,
    body           text NOT NULL DEFAULT '',
    actor_username text,
    article_slug   text,
    -- The event that caused it: one notification per (event, recipient),
    -- whatever happens to the inbox.
    event_id       uuid NOT NULL,
    read_at        timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, user_id)
);

-- A user's list, newest first; and the unread count / unread list.
CREATE INDEX notifications_user_created_idx ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (user_id, created_at DESC) WHERE read_at IS NULL;

-- No row: every default (all on).
CREATE TABLE preferences (
    user_id       uuid PRIMARY KEY,
    email_enabled boolean NOT NULL DEFAULT true
);

-- No row for a kind: both channels on.
CREATE TABLE kind_preferences (
    user_id uuid NOT NULL,
    kind    text NOT NULL,
    in_app  boolean NOT NULL DEFAULT true,
    email   boolean NOT NULL DEFAULT true,
    PRIMARY KEY (user_id, kind)
);

CREATE TABLE recipients (
    user_id    uuid PRIMARY KEY,
    username   text NOT NULL,
    email      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Mail recorded in the consumer's transaction, delivered by the mail sender
-- (at least once) after it commits.
CREATE TABLE outbox_mail (
    id              uuid PRIMARY KEY,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    sent_at         timestamptz,
    -- Set when the sender gives up; the row stays for an operator.
    failed_at       timestamptz
);
CREATE INDEX outbox_mail_pending_idx ON outbox_mail (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;

-- quill_platform::events::OUTBOX_AND_INBOX_SQL (this service only consumes,
-- but the shared tables keep every service's schema alike).
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
