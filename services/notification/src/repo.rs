//! SQL of the notification service.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::rules::{Draft, Kind, MailDraft, Recipient};

/// `NOTIFY` channel announcing each committed notification, payload
/// `"<user id> <notification id>"`, so every instance can push it live.
pub const NOTIFICATIONS_CHANNEL: &str = "quill_notifications";
/// `NOTIFY` channel waking the mail senders when mail is queued.
pub const MAIL_CHANNEL: &str = "quill_mail";

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
}

const COLUMNS: &str = "id, kind, title, body, actor_username, article_slug, read_at, created_at";

/// Keeps the newest state of a recipient by auth's version of the user row;
/// an older event arriving late changes nothing.
pub async fn upsert_recipient(
    conn: &mut PgConnection,
    recipient: &Recipient,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recipients (user_id, username, email, version)
         VALUES ($1, $2, $3, coalesce($4, '-infinity'))
         ON CONFLICT (user_id) DO UPDATE
         SET username = EXCLUDED.username, email = EXCLUDED.email,
             version = EXCLUDED.version, updated_at = now()
         WHERE recipients.version <= EXCLUDED.version",
    )
    .bind(recipient.user_id)
    .bind(&recipient.username)
    .bind(&recipient.email)
    .bind(recipient.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `user` wants `kind` in the app, and by mail (master switch and
/// the kind's own flag). No row means on.
pub async fn delivery(
    conn: &mut PgConnection,
    user: Uuid,
    kind: Kind,
) -> Result<(bool, bool), sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(k.in_app, true),
                coalesce(p.email_enabled, true) AND coalesce(k.email, true)
         FROM (SELECT $1::uuid AS user_id) u
         LEFT JOIN preferences p ON p.user_id = u.user_id
         LEFT JOIN kind_preferences k ON k.user_id = u.user_id AND k.kind = $2",
    )
    .bind(user)
    .bind(kind.as_str())
    .fetch_one(conn)
    .await
}

/// Creates `draft` for each of `users` who has not turned its kind off in
/// the app, in one statement, and announces each row on
/// [`NOTIFICATIONS_CHANNEL`] (delivered when the transaction commits).
/// Returns how many were created; a repeat of `event_id` creates none.
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

/// Queues `mail` to `user` and wakes the mail senders. The address is looked
/// up when the mail is sent, so mail to a user whose `user.registered` has
/// not been applied yet waits for it.
pub async fn queue_mail(
    conn: &mut PgConnection,
    user: Uuid,
    mail: &MailDraft,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox_mail (id, user_id, subject, body) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(user)
        .bind(&mail.subject)
        .bind(&mail.body)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(MAIL_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
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

/// The master email switch (`None`: no row, so on).
pub async fn email_enabled(
    db: impl PgExecutor<'_>,
    user: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("SELECT email_enabled FROM preferences WHERE user_id = $1")
        .bind(user)
        .fetch_optional(db)
        .await
}

/// The kinds `user` has a stored choice for: (kind, in_app, email).
pub async fn kind_preferences(
    db: impl PgExecutor<'_>,
    user: Uuid,
) -> Result<Vec<(String, bool, bool)>, sqlx::Error> {
    sqlx::query_as("SELECT kind, in_app, email FROM kind_preferences WHERE user_id = $1")
        .bind(user)
        .fetch_all(db)
        .await
}

pub async fn set_email_enabled(
    conn: &mut PgConnection,
    user: Uuid,
    enabled: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO preferences (user_id, email_enabled) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET email_enabled = EXCLUDED.email_enabled",
    )
    .bind(user)
    .bind(enabled)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_kind_preference(
    conn: &mut PgConnection,
    user: Uuid,
    kind: Kind,
    in_app: bool,
    email: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO kind_preferences (user_id, kind, in_app, email) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, kind) DO UPDATE SET in_app = EXCLUDED.in_app, email = EXCLUDED.email",
    )
    .bind(user)
    .bind(kind.as_str())
    .bind(in_app)
    .bind(email)
    .execute(conn)
    .await?;
    Ok(())
}

/// A mail claimed for delivery.
#[derive(Debug, FromRow)]
pub struct PendingMail {
    pub id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i32,
}

/// Locks up to `limit` mails due for delivery whose address is known, with
/// the recipient's current address; other senders skip them.
pub async fn claim_mail(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<PendingMail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.id, coalesce(r.email, m.recipient) AS recipient, m.subject, m.body, m.attempts
         FROM outbox_mail m
         LEFT JOIN recipients r ON r.user_id = m.user_id
         WHERE m.sent_at IS NULL AND m.failed_at IS NULL AND m.next_attempt_at <= now()
           AND coalesce(r.email, m.recipient) IS NOT NULL
         ORDER BY m.next_attempt_at
         LIMIT $1
         FOR UPDATE OF m SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn mail_sent(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox_mail SET sent_at = now(), attempts = attempts + 1 WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a failed attempt: retried after `retry_in`, or given up on.
pub async fn mail_failed(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    retry_in: Option<std::time::Duration>,
) -> Result<(), sqlx::Error> {
    let retry_in_ms = retry_in.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    sqlx::query(
        "UPDATE outbox_mail
         SET attempts = attempts + 1, last_error = $2,
             next_attempt_at = now() + make_interval(secs => coalesce($3, 0) / 1000.0),
             failed_at = CASE WHEN $3 IS NULL THEN now() END
         WHERE id = $1",
    )
    .bind(id)
    .bind(error.chars().take(512).collect::<String>())
    .bind(retry_in_ms)
    .execute(conn)
    .await?;
    Ok(())
}
