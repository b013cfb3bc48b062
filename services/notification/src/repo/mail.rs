//! The mail outbox (`outbox_mail`): queued in the consumer's transaction,
//! claimed and settled by the mail senders.

use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::MAIL_CHANNEL;
use crate::rules::MailDraft;

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
