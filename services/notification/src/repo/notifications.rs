//! The notifications themselves: created for many users in one statement,
//! read back by their owner, marked read. Each has a `seq`, its place in
//! its user's stream, given by the table's trigger in commit order (see
//! migration 0007): a resumed stream reads after one.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::NOTIFICATIONS_CHANNEL;
use crate::rules::Draft;

#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub actor_username: Option<String>,
    pub article_slug: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub seq: i64,
}

const COLUMNS: &str =
    "id, kind, title, body, actor_username, article_slug, read_at, created_at, seq";

/// Creates `draft` for each of `users` who has not turned its kind off in
/// the app, in one statement, and announces each row on
/// [`NOTIFICATIONS_CHANNEL`] (delivered when the transaction commits).
/// Returns how many were created; a repeat of `event_id` creates none.
///
/// Numbering a row locks its user's counter until the transaction ends, so
/// rows are inserted in user id order: two transactions notifying overlapping
/// users take those locks in one order and never deadlock. (Content streams
/// followers in id order too, so a fan-out's batches keep to it.)
pub async fn insert_for_users(
    conn: &mut PgConnection,
    event_id: Uuid,
    users: &[Uuid],
    draft: &Draft,
) -> Result<u64, sqlx::Error> {
    if users.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = users.iter().map(|_| Uuid::now_v7()).collect();
    let created: i64 = sqlx::query_scalar(
        "WITH inserted AS (
             INSERT INTO notifications
                 (id, user_id, kind, title, body, actor_username, article_slug, event_id)
             SELECT r.id, r.user_id, $3, $4, $5, $6, $7, $8
             FROM unnest($1::uuid[], $2::uuid[]) AS r (id, user_id)
             LEFT JOIN kind_preferences k ON k.user_id = r.user_id AND k.kind = $3
             WHERE coalesce(k.in_app, true)
             ORDER BY r.user_id
             ON CONFLICT (event_id, user_id) DO NOTHING
             RETURNING id, user_id
         )
         SELECT count(*) FROM inserted
         CROSS JOIN LATERAL pg_notify($9, inserted.user_id::text || ' ' || inserted.id::text) AS n",
    )
    .bind(&ids)
    .bind(users)
    .bind(draft.kind.as_str())
    .bind(&draft.title)
    .bind(&draft.body)
    .bind(&draft.actor_username)
    .bind(&draft.article_slug)
    .bind(event_id)
    .bind(NOTIFICATIONS_CHANNEL)
    .fetch_one(conn)
    .await?;
    Ok(created.unsigned_abs())
}

pub async fn notification(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// One page of `user`'s notifications, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    user: Uuid,
    unread_only: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL)
         ORDER BY created_at DESC, id DESC
         LIMIT $3 OFFSET $4"
    )))
    .bind(user)
    .bind(unread_only)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
}

/// The place of `user`'s notification `id` in their stream; `None` if
/// they have no such notification.
pub async fn seq_of(db: &PgPool, user: Uuid, id: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM notifications WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .fetch_optional(db)
        .await
}

/// `user`'s latest notification in their stream, its id and place; `None`
/// if they have none. Every one before it is committed too: seqs follow
/// commit order.
pub async fn latest(db: &PgPool, user: Uuid) -> Result<Option<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT id, seq FROM notifications WHERE user_id = $1 ORDER BY seq DESC LIMIT 1")
        .bind(user)
        .fetch_optional(db)
        .await
}

/// Up to `limit` of `user`'s notifications after place `seq` in their
/// stream, in its order: what a stream that ended there missed.
pub async fn after(
    db: &PgPool,
    user: Uuid,
    seq: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE user_id = $1 AND seq > $2
         ORDER BY seq
         LIMIT $3"
    )))
    .bind(user)
    .bind(seq)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn count(
    db: impl PgExecutor<'_>,
    user: Uuid,
    unread_only: bool,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL)",
    )
    .bind(user)
    .bind(unread_only)
    .fetch_one(db)
    .await
}

/// Marks one of `user`'s notifications read; `false` if they have no such
/// notification. Marking twice keeps the first time.
pub async fn mark_read(db: impl PgExecutor<'_>, user: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE notifications SET read_at = coalesce(read_at, now())
         WHERE id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

pub async fn mark_all_read(db: impl PgExecutor<'_>, user: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user)
    .execute(db)
    .await?
    .rows_affected())
}
