//! What each user wants delivered: the master email switch (`preferences`)
//! and the per-kind choices (`kind_preferences`). A missing row means on.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::rules::Kind;

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
