-- Identity: users, their sessions and the refresh tokens that extend them.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    username      text NOT NULL,
    password_hash text NOT NULL,
    bio           text,
    image         text,
    role          text NOT NULL DEFAULT 'creator'
                  CHECK (role IN ('viewer', 'creator', 'admin')),
    banned_at     timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Case-insensitive uniqueness: "Alice" and "alice" are one account.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE sessions (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent    text NOT NULL DEFAULT '',
    ip            text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text
);

CREATE INDEX sessions_active_by_user ON sessions (user_id) WHERE revoked_at IS NULL;

-- Only the SHA-256 of a refresh token is stored. A token is used once: using
-- it sets rotated_at and issues its successor; a second use is reuse.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
