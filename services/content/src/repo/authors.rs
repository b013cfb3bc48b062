//! The authors read-model: auth's profile data, copied here so listings
//! join it instead of calling auth per row. `refreshed_at` is when auth's
//! data was as copied (an event's time, or when auth was asked).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorRow {
    pub id: Uuid,
    pub username: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub banned: bool,
}

pub async fn by_ids(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<AuthorRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, username, bio, image, banned FROM authors WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// An author and the first `limit` of their followers, in id order.
#[derive(Debug, FromRow)]
pub struct WithFollowers {
    #[sqlx(flatten)]
    pub author: AuthorRow,
    pub followers: Vec<Uuid>,
}

/// The authors with these ids, each with the first `limit` of their
/// followers now, in id order, in one statement: what a new article's
/// event carries. Ids unknown here are absent from the answer.
pub async fn with_followers(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    limit: i64,
) -> Result<Vec<WithFollowers>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id, a.username, a.bio, a.image, a.banned, \
                ARRAY(SELECT f.follower_id FROM follows f WHERE f.followee_id = a.id \
                      ORDER BY f.follower_id LIMIT $2) AS followers \
         FROM authors a WHERE a.id = ANY($1)",
    )
    .bind(ids)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Case-insensitive, like auth's usernames. Several rows can carry a name
/// while a rename has not reached us; the freshest wins.
pub async fn by_username(
    db: impl PgExecutor<'_>,
    username: &str,
) -> Result<Option<AuthorRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, bio, image, banned FROM authors \
         WHERE lower(username) = lower($1) ORDER BY refreshed_at DESC LIMIT 1",
    )
    .bind(username)
    .fetch_optional(db)
    .await
}

/// Inserts or refreshes `authors` in one statement, with what auth told as
/// of `as_of`: a row already holding a later state is left alone, so an
/// event applied late (consumers run concurrently) or a lookup answered
/// before a change cannot undo that change. Returns how many rows it wrote.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    authors: &[AuthorRow],
    as_of: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if authors.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = authors.iter().map(|a| a.id).collect();
    let usernames: Vec<&str> = authors.iter().map(|a| a.username.as_str()).collect();
    let bios: Vec<Option<&str>> = authors.iter().map(|a| a.bio.as_deref()).collect();
    let images: Vec<Option<&str>> = authors.iter().map(|a| a.image.as_deref()).collect();
    let banned: Vec<bool> = authors.iter().map(|a| a.banned).collect();
    let written = sqlx::query(
        "INSERT INTO authors (id, username, bio, image, banned, refreshed_at) \
         SELECT id, username, bio, image, banned, $6 \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[]) \
              AS input (id, username, bio, image, banned) \
         ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, bio = EXCLUDED.bio, \
             image = EXCLUDED.image, banned = EXCLUDED.banned, \
             refreshed_at = EXCLUDED.refreshed_at \
         WHERE authors.refreshed_at <= EXCLUDED.refreshed_at",
    )
    .bind(ids)
    .bind(usernames)
    .bind(bios)
    .bind(images)
    .bind(banned)
    .bind(as_of)
    .execute(db)
    .await?;
    Ok(written.rows_affected())
}
