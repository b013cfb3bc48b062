use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub user_agent: String,
    pub ip: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn create(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user_id: Uuid,
    user_agent: &str,
    ip: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, user_agent, ip, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(user_id)
    .bind(user_agent)
    .bind(ip)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn add_refresh_token(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    session_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
        .bind(token_hash)
        .bind(session_id)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(Debug, FromRow)]
pub struct PresentedRefreshToken {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub rotated_at: Option<DateTime<Utc>>,
    pub session_revoked_at: Option<DateTime<Utc>>,
    pub session_expires_at: DateTime<Utc>,
}

/// Locks the token row, so two concurrent uses of one token serialize and
/// the second one sees it rotated.
pub async fn lock_refresh_token(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<PresentedRefreshToken>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.session_id, s.user_id, t.rotated_at,
                s.revoked_at AS session_revoked_at, s.expires_at AS session_expires_at
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
         WHERE t.token_hash = $1
         FOR UPDATE OF t",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

pub async fn mark_rotated(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1")
        .bind(token_hash)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn touch(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_used_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Revokes one active session of `user_id`; false when there was none.
pub async fn revoke(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $3
         WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(user_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every active session of a user except `keep`; returns their ids.
pub async fn revoke_all(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $3
         WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2
         RETURNING id",
    )
    .bind(user_id)
    .bind(keep)
    .bind(reason)
    .fetch_all(db)
    .await
}

pub async fn list_active(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_agent, ip, created_at, last_used_at, expires_at FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
         ORDER BY last_used_at DESC",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// The user and role behind a session, if it is live and its user is not
/// banned: the truth every service's session check rests on.
pub async fn live_user_role(
    db: impl PgExecutor<'_>,
    session_id: Uuid,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.role
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id = $1 AND s.revoked_at IS NULL
           AND s.expires_at > now() AND u.banned_at IS NULL",
    )
    .bind(session_id)
    .fetch_optional(db)
    .await
}

/// When a session was opened (by a password login or registration).
pub async fn opened_at(
    db: impl PgExecutor<'_>,
    session_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT created_at FROM sessions WHERE id = $1")
        .bind(session_id)
        .fetch_optional(db)
        .await
}

/// Whether a client at `ip` has ever opened a session of this user (the
/// sessions table keeps ended sessions too).
pub async fn seen_client(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    ip: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1 AND ip = $2)")
        .bind(user_id)
        .bind(ip)
        .fetch_one(db)
        .await
}
