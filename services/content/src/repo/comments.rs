//! Comments on articles.

use chrono::{DateTime, Utc};
use quill_events::outbox::OutboxRow;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

/// A comment with its author's profile as the viewer sees it.
#[derive(Debug, Clone, FromRow, Serialize, Deserialize)]
pub struct CommentRow {
    pub id: i64,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub author_id: Uuid,
    pub author_username: Option<String>,
    pub author_bio: Option<String>,
    pub author_image: Option<String>,
    pub following: bool,
}

/// Which page of an article's comments to read.
#[derive(Debug, Clone, Copy)]
pub struct CommentPage {
    pub limit: i64,
    pub offset: i64,
    /// Read strictly older comments than this id (a keyset cursor).
    pub before: Option<i64>,
}

pub struct NewComment<'a> {
    /// Taken from the comments' sequence beforehand
    /// (`articles::comment_target`), so the event can name it.
    pub id: i64,
    pub article_id: Uuid,
    pub author_id: Uuid,
    pub body: &'a str,
}

/// Inserts the comment and the event announcing it, in one statement, if
/// the article is still as `seen` read it (`None` otherwise, with nothing
/// written: read it again). Returns the comment's timestamps.
pub async fn insert_announced(
    db: impl PgExecutor<'_>,
    comment: &NewComment<'_>,
    seen: DateTime<Utc>,
    event: &OutboxRow,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH ",
        as_read!("$2", "$8"),
        ", c AS ( \
             INSERT INTO comments (id, article_id, author_id, body) OVERRIDING SYSTEM VALUE \
             SELECT $1, a.id, $3, $4 FROM a \
             RETURNING created_at, updated_at), \
         announced AS ( \
             INSERT INTO outbox (id, routing_key, payload) SELECT $5, $6, $7 FROM c) \
         SELECT created_at, updated_at FROM c"
    ))
    .bind(comment.id)
    .bind(comment.article_id)
    .bind(comment.author_id)
    .bind(comment.body)
    .bind(event.id)
    .bind(&event.routing_key)
    .bind(&event.payload)
    .bind(seen)
    .fetch_optional(db)
    .await
}

/// Newest first, as anybody sees them (`following` is false: a viewer's
/// marks are read apart, `articles::viewer_marks`). Banned authors'
/// comments are left out. One row more than the page asks for tells the
/// caller whether another page follows.
pub async fn for_article(
    db: impl PgExecutor<'_>,
    article_id: Uuid,
    page: CommentPage,
) -> Result<Vec<CommentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.body, c.created_at, c.updated_at, c.author_id, \
                au.username AS author_username, au.bio AS author_bio, au.image AS author_image, \
                false AS following \
         FROM comments c LEFT JOIN authors au ON au.id = c.author_id \
         WHERE c.article_id = $1 AND au.banned IS NOT TRUE \
           AND ($4::bigint IS NULL OR c.id < $4) \
         ORDER BY c.id DESC LIMIT $2 OFFSET $3",
    )
    .bind(article_id)
    .bind(page.limit + 1)
    .bind(page.offset)
    .bind(page.before)
    .fetch_all(db)
    .await
}

/// The author of comment `id` on article `article_id`, if it is there.
pub async fn author_of(
    db: impl PgExecutor<'_>,
    article_id: Uuid,
    id: i64,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT author_id FROM comments WHERE id = $1 AND article_id = $2")
        .bind(id)
        .bind(article_id)
        .fetch_optional(db)
        .await
}

pub async fn delete(db: impl PgExecutor<'_>, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM comments WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}
