//! The recipients read-model: each user's username and address, fed by
//! auth's `user.*` events.

use sqlx::PgConnection;

use crate::rules::Recipient;

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
