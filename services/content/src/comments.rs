//! Comments: anyone signed in may comment; the comment's author, the
//! article's author or a moderator may delete.

use quill_events::EventOrigin;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    attempts::Attempts,
    commenting::{self, AddedComment, Draft, Outcome},
    cursor::CommentPosition,
    error::ContentError,
    policy::{self, Caller},
    read_cache::versions,
    repo::{
        articles as article_repo,
        comments::{self as repo, CommentPage, CommentRow},
    },
    service::Content,
    validation,
};

#[derive(Debug, Default)]
pub struct CommentQuery {
    pub limit: u32,
    pub offset: u32,
    pub cursor: Option<String>,
}

#[derive(Debug)]
pub struct CommentList {
    pub comments: Vec<CommentRow>,
    /// Present when more comments follow this page.
    pub next_cursor: Option<String>,
}

/// A page of comments as it is cached: where the next starts rather than a
/// cursor, which is signed with this process's key.
#[derive(Debug, Serialize, Deserialize)]
struct Listed {
    comments: Vec<CommentRow>,
    next: Option<CommentPosition>,
}

impl Content {
    pub async fn add_comment(
        &self,
        caller: &Caller,
        slug: &str,
        body: &str,
    ) -> Result<(CommentRow, String), ContentError> {
        let slug = validation::slug(slug)?;
        let body = validation::comment_body(body)?;
        let mut draft = Draft {
            commenter: caller.user,
            slug: slug.to_owned(),
            body,
            origin: EventOrigin::current(),
            span: tracing::Span::current(),
        };
        let mut attempts = Attempts::default();
        loop {
            let outcome = if attempts.read_again_before() {
                commenting::write_alone(&self.pool, &self.cache, draft).await?
            } else {
                self.commenting.submit(draft).await??
            };
            draft = match outcome {
                Outcome::Added(added) => {
                    let AddedComment {
                        comment,
                        slug,
                        invalidated,
                    } = *added;
                    invalidated.await;
                    return Ok((comment, slug));
                }
                Outcome::NoArticle => return Err(ContentError::NotFound("article")),
                // Fetched from auth without holding a writer up.
                Outcome::NewCommenter(draft) => {
                    attempts.fetch_user(&self.authors, caller.user).await?;
                    draft
                }
                // The event named the article as it was read: read it again,
                // alone, waiting for whoever holds it rather than holding up
                // a writer and every comment behind it.
                Outcome::Moved(draft) => {
                    attempts.read_again(&draft.slug)?;
                    draft
                }
            };
        }
    }

    /// A page of the article's comments, newest first, as anybody sees it
    /// (cached), then with `following` for `viewer`; banned authors'
    /// comments are left out, and a banned author's article has none. A
    /// cursor replaces the offset.
    pub async fn comments(
        &self,
        viewer: Option<Uuid>,
        slug: &str,
        query: CommentQuery,
    ) -> Result<CommentList, ContentError> {
        let slug = validation::slug(slug)?;
        let before = match query.cursor.as_deref().map(str::trim) {
            Some(cursor) if !cursor.is_empty() => Some(
                self.cursors
                    .decode_comment(cursor)
                    .map_err(|e| ContentError::invalid("cursor", e.to_string()))?
                    .id,
            ),
            _ => None,
        };
        let page = CommentPage {
            limit: validation::comment_limit(query.limit),
            // A keyset page starts right after the cursor; the offset is spent.
            offset: if before.is_some() {
                0
            } else {
                i64::from(query.offset)
            },
            before,
        };
        let key = format!(
            "comments:{slug}:{}:{}:{}",
            page.limit,
            page.offset,
            page.before.map(|id| id.to_string()).unwrap_or_default()
        );
        let mut list = self
            .cache
            .get_or_load(
                "comments",
                &key,
                &[
                    versions::article(slug),
                    versions::comments(slug),
                    versions::authors(),
                ],
                || self.load_comments(slug, page),
            )
            .await?;
        if let Some(viewer) = viewer.filter(|_| !list.comments.is_empty()) {
            let mut authors: Vec<Uuid> = list.comments.iter().map(|c| c.author_id).collect();
            authors.sort_unstable();
            authors.dedup();
            let (_, following) =
                article_repo::viewer_marks(&self.pool, viewer, &[], &authors).await?;
            for comment in &mut list.comments {
                comment.following = following.contains(&comment.author_id);
            }
        }
        Ok(CommentList {
            comments: list.comments,
            next_cursor: list.next.map(|p| self.cursors.encode_comment(p)),
        })
    }

    async fn load_comments(&self, slug: &str, page: CommentPage) -> Result<Listed, ContentError> {
        let article = article_repo::key(&self.pool, slug)
            .await?
            .ok_or(ContentError::NotFound("article"))?;
        let mut comments = repo::for_article(&self.lists, article.id, page).await?;
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let more = comments.len() > limit;
        comments.truncate(limit);
        // From the last row read, before any are dropped below, so rows
        // dropped at the end of a page are not read again.
        let next = comments
            .last()
            .filter(|_| more)
            .map(|last| CommentPosition { id: last.id });
        let missing: Vec<Uuid> = comments
            .iter()
            .filter(|c| c.author_username.is_none())
            .map(|c| c.author_id)
            .collect();
        if !missing.is_empty() {
            let authors = self.authors.by_ids(&missing).await?;
            for comment in &mut comments {
                if let Some(author) = authors.get(&comment.author_id) {
                    comment.author_username = Some(author.username.clone());
                    comment.author_bio.clone_from(&author.bio);
                    comment.author_image.clone_from(&author.image);
                }
            }
            comments.retain(|c| {
                !authors
                    .get(&c.author_id)
                    .is_some_and(|author| author.banned)
            });
        }
        Ok(Listed { comments, next })
    }

    pub async fn delete_comment(
        &self,
        caller: &Caller,
        slug: &str,
        id: i64,
    ) -> Result<(), ContentError> {
        let slug = validation::slug(slug)?;
        let mut tx = self.pool.begin().await?;
        let article = article_repo::key(&mut *tx, slug)
            .await?
            .ok_or(ContentError::NotFound("article"))?;
        let author = repo::author_of(&mut *tx, article.id, id)
            .await?
            .ok_or(ContentError::NotFound("comment"))?;
        policy::may_delete_comment(caller, author, article.author_id)?;
        repo::delete(&mut *tx, id).await?;
        tx.commit().await?;
        // Not announced, so only this writer makes it stale.
        self.cache
            .invalidate(&[versions::comments(&article.slug)])
            .await;
        Ok(())
    }
}
