//! Who follows whom, and who followed whom when: a follow that ends moves
//! to `past_follows` with its period, so a fan-out can ask as of a moment.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Idempotent: following twice is following. `true` when the follow is new.
/// `at` comes from the same clock as the events' `occurred_at`, which a
/// fan-out compares it with.
pub async fn insert(
    db: impl PgExecutor<'_>,
    follower: Uuid,
    followee: Uuid,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO follows (follower_id, followee_id, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(follower)
    .bind(followee)
    .bind(at)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Ends the follow, if there is one, keeping its period; one statement.
pub async fn delete(
    db: impl PgExecutor<'_>,
    follower: Uuid,
    followee: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH ended AS ( \
             DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2 \
             RETURNING follower_id, followee_id, created_at) \
         INSERT INTO past_follows (follower_id, followee_id, followed_at, unfollowed_at) \
         SELECT follower_id, followee_id, created_at, greatest(created_at, $3) FROM ended",
    )
    .bind(follower)
    .bind(followee)
    .bind(at)
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

/// The SQL of one batch of followers, keyset-paged on the follower id: the
/// current follows begun by `$4` and, as of `$4`, the ended ones that were
/// running then. Each side walks its index from the keyset `$2` on and
/// stops at `$3` distinct ids, so the first `$3` of their union are the
/// batch (a short batch is the last). The ended side also passes over the
/// ended follows that do not cover `$4`: as many as the author lost within
/// the retention window, which bounds it. An unset `$2` (the first batch)
/// is the nil id, below every other; an unset `$4` is now, when no ended
/// follow was running. Both stay index conditions in a generic plan, so
/// the statement runs on the main pool, planned once per connection.
pub const FOLLOWER_IDS_SQL: &str = "SELECT DISTINCT follower_id FROM ( \
       (SELECT follower_id FROM follows \
        WHERE followee_id = $1 \
          AND follower_id > COALESCE($2, '00000000-0000-0000-0000-000000000000'::uuid) \
          AND created_at <= COALESCE($4, 'infinity'::timestamptz) \
        ORDER BY follower_id LIMIT $3) \
       UNION ALL \
       (SELECT DISTINCT follower_id FROM past_follows \
        WHERE followee_id = $1 \
          AND follower_id > COALESCE($2, '00000000-0000-0000-0000-000000000000'::uuid) \
          AND followed_at <= $4 AND unfollowed_at > $4 \
        ORDER BY follower_id LIMIT $3) \
     ) AS followers ORDER BY follower_id LIMIT $3";

/// Up to `limit` followers of `followee` whose ids sort after `after`: of
/// now, or of the moment `as_of`.
pub async fn follower_ids(
    db: impl PgExecutor<'_>,
    followee: Uuid,
    after: Option<Uuid>,
    limit: i64,
    as_of: Option<DateTime<Utc>>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(FOLLOWER_IDS_SQL)
        .bind(followee)
        .bind(after)
        .bind(limit)
        .bind(as_of)
        .fetch_all(db)
        .await
}
