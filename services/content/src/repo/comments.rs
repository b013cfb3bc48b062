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
    /// (`articles::comment_places`), so the event can name it.
    pub id: i64,
    pub article_id: Uuid,
    pub author_id: Uuid,
    pub body: &'a str,
    /// The article's `updated_at` as the comment's event was built from it.
    pub seen: DateTime<Utc>,
    pub event: &'a OutboxRow,
}

/// A comment as written.
#[derive(Debug, FromRow)]
pub struct Inserted {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a write of comments does about an article another transaction
/// holds (an edit or a deletion in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldArticles {
    /// Wait for it, then write if the article is still as read.
    Wait,
    /// Write nothing on it: a batch does not hold up every comment in it
    /// for one article's edit.
    Skip,
}

/// The statement of `insert_announced`, locking the articles with `$lock`.
/// The articles are share-locked in id order, so that an edit waiting for
/// one never holds another this statement waits for.
macro_rules! insert_announced_sql {
    ($lock:literal) => {
        concat!(
            "WITH new AS ( \
                 SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], \
                                      $5::timestamptz[], $6::uuid[], $7::text[], $8::bytea[]) \
                     WITH ORDINALITY AS n(id, article_id, author_id, body, seen, event_id, \
                                          routing_key, payload, position)), \
             a AS ( \
                 SELECT id, updated_at FROM articles \
                 WHERE (id, updated_at) IN (SELECT article_id, seen FROM new) \
                 ORDER BY id ",
            $lock,
            "), \
             c AS ( \
                 INSERT INTO comments (id, article_id, author_id, body) OVERRIDING SYSTEM VALUE \
                 SELECT new.id, new.article_id, new.author_id, new.body \
                 FROM new JOIN a ON a.id = new.article_id AND a.updated_at = new.seen \
                 ORDER BY new.position \
                 RETURNING id, created_at, updated_at), \
             announced AS ( \
                 INSERT INTO outbox (id, routing_key, payload) \
                 SELECT new.event_id, new.routing_key, new.payload \
                 FROM new JOIN c USING (id) ORDER BY new.position) \
             SELECT id, created_at, updated_at FROM c"
        )
    };
}

/// Inserts the comments and the events announcing them, in one statement:
/// each whose article is still as `seen` read it (`as_read!`, for many
/// articles) and, with `HeldArticles::Skip`, not held by another
/// transaction. The others are absent from the answer, with nothing
/// written: read them again.
pub async fn insert_announced(
    db: impl PgExecutor<'_>,
    comments: &[NewComment<'_>],
    held: HeldArticles,
) -> Result<Vec<Inserted>, sqlx::Error> {
    let ids: Vec<i64> = comments.iter().map(|c| c.id).collect();
    let articles: Vec<Uuid> = comments.iter().map(|c| c.article_id).collect();
    let authors: Vec<Uuid> = comments.iter().map(|c| c.author_id).collect();
    let bodies: Vec<&str> = comments.iter().map(|c| c.body).collect();
    let seen: Vec<DateTime<Utc>> = comments.iter().map(|c| c.seen).collect();
    let events: Vec<Uuid> = comments.iter().map(|c| c.event.id).collect();
    let keys: Vec<&str> = comments
        .iter()
        .map(|c| c.event.routing_key.as_str())
        .collect();
    let payloads: Vec<&[u8]> = comments
        .iter()
        .map(|c| c.event.payload.as_slice())
        .collect();
    let statement = match held {
        HeldArticles::Wait => insert_announced_sql!("FOR SHARE"),
        HeldArticles::Skip => insert_announced_sql!("FOR SHARE SKIP LOCKED"),
    };
    sqlx::query_as(statement)
        .bind(&ids)
        .bind(&articles)
        .bind(&authors)
        .bind(&bodies)
        .bind(&seen)
        .bind(&events)
        .bind(&keys)
        .bind(&payloads)
        .fetch_all(db)
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
