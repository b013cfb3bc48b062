//! Who follows whom.

use sqlx::PgExecutor;
use uuid::Uuid;

/// Idempotent: following twice is following. `true` when the follow is new.
pub async fn insert(
    db: impl PgExecutor<'_>,
    follower: Uuid,
    followee: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(follower)
    .bind(followee)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn delete(
    db: impl PgExecutor<'_>,
    follower: Uuid,
    followee: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2")
        .bind(follower)
        .bind(followee)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn exists(
    db: impl PgExecutor<'_>,
    follower: Uuid,
    followee: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM follows WHERE follower_id = $1 AND followee_id = $2)",
    )
    .bind(follower)
    .bind(followee)
    .fetch_one(db)
    .await
}

/// The SQL of one batch of followers, keyset-paged on the follower id.
pub const FOLLOWER_IDS_SQL: &str = "SELECT follower_id FROM follows \
     WHERE followee_id = $1 AND ($2::uuid IS NULL OR follower_id > $2) \
     ORDER BY follower_id LIMIT $3";

/// Up to `limit` followers of `followee` whose ids sort after `after`.
pub async fn follower_ids(
    db: impl PgExecutor<'_>,
    followee: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(FOLLOWER_IDS_SQL)
        .bind(followee)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
}
