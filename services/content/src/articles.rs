//! Articles: publishing, editing, deleting, favoriting, and the lists
//! (filtered list, search, feed) with RealWorld's limit/offset and an opaque
//! keyset cursor for deep pages.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use quill_events::{EventOrigin, new_envelope, outbox::OutboxRow};
use quill_platform::cache::Version;
use quill_proto::events::v1::{
    ArticleDeleted, ArticleFavorited, ArticleUpdated, envelope::Payload,
};
use quill_server::db::unique_violation;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    attempts::Attempts,
    cursor::Position,
    error::ContentError,
    events::{PRODUCER, announce, article_snapshot, snapshot},
    policy::{self, Caller},
    publishing::{Draft, Outcome, PublishedArticle},
    read_cache::{changed_by, versions},
    repo::articles::{
        self as repo, ArticleChanges, ArticleFilter, ArticlePage, ArticleRow, PageRequest,
    },
    service::Content,
    slug,
    validation::{self, Violations},
};

/// Attempts at a free slug: the title's own, then random suffixes, whose
/// collisions are vanishingly rare.
const SLUG_ATTEMPTS: usize = 5;

pub struct NewArticleInput {
    pub title: String,
    pub description: String,
    pub body: String,
    pub tags: Vec<String>,
}

/// Unset fields stay as they are; `tags: Some` replaces the tag list.
pub struct ArticleUpdateInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct ListQuery {
    pub tag: Option<String>,
    pub author: Option<String>,
    pub favorited_by: Option<String>,
    pub query: Option<String>,
    pub limit: u32,
    pub offset: u32,
    pub cursor: Option<String>,
}

#[derive(Debug)]
pub struct Page {
    pub articles: Vec<ArticleRow>,
    /// How many articles match in all (RealWorld's `articlesCount`).
    pub total: u64,
    /// Present when more articles follow this page (never with a search).
    pub next_cursor: Option<String>,
}

/// A page as it is cached: where the next one starts rather than a cursor,
/// which is signed with this process's key (another replica's, or the one
/// before a restart or rotation, may differ).
#[derive(Debug, Serialize, Deserialize)]
struct Listed {
    articles: Vec<ArticleRow>,
    total: u64,
    next: Option<Position>,
}

impl Listed {
    fn signed(self, cursors: &crate::cursor::CursorCodec) -> Page {
        Page {
            articles: self.articles,
            total: self.total,
            next_cursor: self.next.map(|position| cursors.encode(position)),
        }
    }
}

impl Content {
    pub async fn create_article(
        &self,
        caller: &Caller,
        input: NewArticleInput,
    ) -> Result<ArticleRow, ContentError> {
        policy::may_publish(caller)?;
        let mut violations = Violations::new();
        let title = validation::title(&input.title, &mut violations);
        let description = validation::description(&input.description, &mut violations);
        let body = validation::body(&input.body, &mut violations);
        let tags = validation::tags(&input.tags, &mut violations);
        validation::finish(violations)?;
        let base = slug::from_title(&title);
        let mut draft = Draft {
            author: caller.user,
            slug: base.clone(),
            title,
            description,
            body,
            tags,
            origin: EventOrigin::current(),
            span: tracing::Span::current(),
        };
        let mut slugs_tried = 0;
        let mut attempts = Attempts::default();
        loop {
            let outcome = self.publishing.submit(draft).await??;
            draft = match outcome {
                Outcome::Published(published) => {
                    let PublishedArticle {
                        article,
                        stale,
                        invalidated,
                        missing_links,
                    } = *published;
                    invalidated.await;
                    if missing_links {
                        self.relink_tags(article.id, &article.tags).await?;
                        self.cache.invalidate(&stale).await;
                    }
                    return Ok(article);
                }
                Outcome::SlugTaken(mut draft) => {
                    slugs_tried += 1;
                    if slugs_tried == SLUG_ATTEMPTS {
                        return Err(ContentError::Internal(format!(
                            "no free slug for {base:?} after {SLUG_ATTEMPTS} attempts"
                        )));
                    }
                    draft.slug = slug::with_random_suffix(&base, &mut rand::thread_rng());
                    draft
                }
                // Fetched from auth without holding a writer up.
                Outcome::NewAuthor(draft) => {
                    attempts.fetch_user(&self.authors, caller.user).await?;
                    draft
                }
            };
        }
    }

    /// A tag this process knew to exist did not (one deleted by hand), so
    /// the article went out without its link: create the tags and link
    /// them after all, as the event announced.
    async fn relink_tags(&self, article: Uuid, tags: &[String]) -> Result<(), ContentError> {
        tracing::warn!(%article, "a known tag was missing; linking the article's tags again");
        self.known_tags.forget_all();
        repo::create_tags(&self.pool, tags).await?;
        repo::link_tags(&self.pool, article, tags).await?;
        self.known_tags.learn(tags);
        Ok(())
    }

    /// One article as `viewer` sees it: as anybody does (cached), then
    /// their own marks.
    pub async fn article(
        &self,
        viewer: Option<Uuid>,
        slug: &str,
    ) -> Result<ArticleRow, ContentError> {
        let slug = validation::slug(slug)?;
        let mut article = self
            .cache
            .get_or_load(
                "article",
                &format!("article:{slug}"),
                &[versions::article(slug), versions::authors()],
                || async {
                    let mut found: Vec<ArticleRow> = repo::by_slug(&self.pool, slug, None)
                        .await?
                        .into_iter()
                        .collect();
                    self.fill_authors(&mut found).await?;
                    found.pop().ok_or(ContentError::NotFound("article"))
                },
            )
            .await?;
        self.mark_for(viewer, std::slice::from_mut(&mut article))
            .await?;
        Ok(article)
    }

    pub async fn update_article(
        &self,
        caller: &Caller,
        slug: &str,
        input: ArticleUpdateInput,
    ) -> Result<ArticleRow, ContentError> {
        let slug = validation::slug(slug)?;
        let mut violations = Violations::new();
        let title = input
            .title
            .as_deref()
            .map(|t| validation::title(t, &mut violations));
        let description = input
            .description
            .as_deref()
            .map(|d| validation::description(d, &mut violations));
        let body = input
            .body
            .as_deref()
            .map(|b| validation::body(b, &mut violations));
        let tags = input
            .tags
            .as_deref()
            .map(|t| validation::tags(t, &mut violations));
        validation::finish(violations)?;

        let mut tx = self.pool.begin().await?;
        let key = repo::key_for_update(&mut *tx, slug)
            .await?
            .ok_or(ContentError::NotFound("article"))?;
        policy::may_change_article(caller, key.author_id)?;
        let changes = ArticleChanges {
            slug: None,
            title: title.as_deref(),
            description: description.as_deref(),
            body: body.as_deref(),
        };
        // The slug follows the title, and only a changed one: links to the
        // article survive edits of its text.
        let wanted = title
            .as_deref()
            .filter(|t| *t != key.title)
            .map(slug::from_title)
            .filter(|base| *base != key.slug);
        let final_slug = match wanted {
            Some(base) => update_with_free_slug(&mut tx, key.id, &base, &changes).await?,
            None => {
                repo::update(&mut *tx, key.id, &changes).await?;
                key.slug.clone()
            }
        };
        if let Some(tags) = &tags {
            repo::unlink_tags(&mut *tx, key.id).await?;
            if !tags.is_empty() {
                repo::create_tags(&mut *tx, tags).await?;
                repo::link_tags(&mut *tx, key.id, tags).await?;
            }
        }
        let article = article_snapshot(&mut tx, key.id).await?;
        let updated = Payload::ArticleUpdated(ArticleUpdated {
            article: Some(article),
            previous_slug: (final_slug != key.slug).then_some(key.slug),
        });
        let stale = changed_by(&updated);
        announce(&mut tx, updated).await?;
        quill_events::outbox::commit(tx).await?;
        self.cache.invalidate(&stale).await;
        self.article(Some(caller.user), &final_slug).await
    }

    pub async fn delete_article(&self, caller: &Caller, slug: &str) -> Result<(), ContentError> {
        let slug = validation::slug(slug)?;
        let mut tx = self.pool.begin().await?;
        let key = repo::key_for_update(&mut *tx, slug)
            .await?
            .ok_or(ContentError::NotFound("article"))?;
        policy::may_change_article(caller, key.author_id)?;
        repo::delete(&mut *tx, key.id).await?;
        let deleted = Payload::ArticleDeleted(ArticleDeleted {
            article_id: key.id.to_string(),
            slug: key.slug,
            author_id: key.author_id.to_string(),
        });
        let stale = changed_by(&deleted);
        announce(&mut tx, deleted).await?;
        quill_events::outbox::commit(tx).await?;
        self.cache.invalidate(&stale).await;
        Ok(())
    }

    /// Idempotent; returns the article as the caller now sees it. Only a
    /// new favorite is announced. Each write answers in its own statement:
    /// it has just made the cached article stale.
    pub async fn favorite(
        &self,
        caller: &Caller,
        slug: &str,
        favorite: bool,
    ) -> Result<ArticleRow, ContentError> {
        let slug = validation::slug(slug)?;
        let (answer, stale) = if favorite {
            self.add_favorite(caller.user, slug).await?
        } else {
            let marked = repo::unfavorite_by_slug(&self.pool, slug, caller.user)
                .await?
                .ok_or(ContentError::NotFound("article"))?;
            let stale = match marked.changed {
                // Not announced, so only this writer makes it stale.
                true => vec![
                    versions::articles(),
                    versions::article(&marked.article.slug),
                ],
                false => Vec::new(),
            };
            (marked.article, stale)
        };
        self.cache.invalidate(&stale).await;
        // An author new to the read-model is asked of auth with no
        // connection held.
        let mut found = vec![answer];
        self.fill_authors(&mut found).await?;
        found.pop().ok_or(ContentError::NotFound("article"))
    }

    /// Favorites the article as `fan`, announcing the article as it was
    /// read: an edit landing in between makes it read the article again.
    /// Both statements run on one connection, which costs a round trip
    /// each time it goes back to the pool.
    async fn add_favorite(
        &self,
        fan: Uuid,
        slug: &str,
    ) -> Result<(ArticleRow, Vec<Version>), ContentError> {
        let mut db = self.pool.acquire().await?;
        let mut attempts = Attempts::default();
        loop {
            let place = repo::favorite_place(&mut *db, slug, fan)
                .await?
                .ok_or(ContentError::NotFound("article"))?;
            // So the favorited-by filter can find the fan by username.
            let Some(username) = place.fan_username else {
                // Asked of auth with no connection held.
                drop(db);
                attempts.fetch_user(&self.authors, fan).await?;
                db = self.pool.acquire().await?;
                continue;
            };
            let favorited = Payload::ArticleFavorited(ArticleFavorited {
                user_id: fan.to_string(),
                username,
                article: Some(snapshot(place.article.clone())),
            });
            let stale = changed_by(&favorited);
            let event = OutboxRow::of(&new_envelope(PRODUCER, favorited))?;
            let written = repo::favorite_announced(&mut *db, &place.article, fan, &event)
                .instrument(event.write_span())
                .await?;
            match written {
                Some(marked) if marked.changed => {
                    quill_events::outbox::written();
                    return Ok((marked.article, stale));
                }
                Some(marked) => return Ok((marked.article, Vec::new())),
                None => attempts.read_again(slug)?,
            }
        }
    }

    /// Newest first, or best match first with a `query`. A cursor replaces
    /// the offset; it cannot be combined with a search, whose rank order
    /// has no stable keyset (use the offset there).
    pub async fn list_articles(
        &self,
        viewer: Option<&Caller>,
        query: ListQuery,
    ) -> Result<Page, ContentError> {
        let mut violations = Violations::new();
        let filter = ArticleFilter {
            tag: validation::filter("tag", query.tag.as_deref(), &mut violations),
            author: validation::filter("author", query.author.as_deref(), &mut violations),
            favorited_by: validation::filter(
                "favorited",
                query.favorited_by.as_deref(),
                &mut violations,
            ),
            query: validation::search_query(query.query.as_deref(), &mut violations),
        };
        let after = self.position(query.cursor.as_deref(), &mut violations);
        if filter.query.is_some() && after.is_some() {
            violations.push((
                "cursor",
                "cannot be combined with a search query; page with offset".into(),
            ));
        }
        validation::finish(violations)?;
        let page = page_request(query.limit, query.offset, after);
        let load = || async {
            let result = repo::list(&self.lists, None, &filter, page).await?;
            self.page(result, page.limit, filter.query.is_none()).await
        };
        // Searches are not cached: their keys are as many as the queries
        // people type, each rarely asked twice.
        let mut found = match filter.query {
            Some(_) => load().await?,
            None => {
                self.cache
                    .get_or_load(
                        "list",
                        &list_key(&filter, &page),
                        &[versions::articles(), versions::authors()],
                        load,
                    )
                    .await?
            }
        };
        self.mark_for(viewer.map(|c| c.user), &mut found.articles)
            .await?;
        Ok(found.signed(&self.cursors))
    }

    /// Articles by the authors the caller follows, newest first.
    pub async fn feed(
        &self,
        caller: &Caller,
        limit: u32,
        offset: u32,
        cursor: Option<&str>,
    ) -> Result<Page, ContentError> {
        let mut violations = Violations::new();
        let after = self.position(cursor, &mut violations);
        validation::finish(violations)?;
        let page = page_request(limit, offset, after);
        let key = format!(
            "feed-page:{}:{}:{}:{:?}",
            caller.user, page.limit, page.offset, page.after
        );
        let repo::FeedPage {
            total,
            slugs,
            favorited,
        } = self
            .cache
            .get_or_load(
                "feed",
                &key,
                &[
                    versions::articles(),
                    versions::authors(),
                    versions::follows(caller.user),
                ],
                || async {
                    Ok::<_, ContentError>(repo::feed_page(&self.pool, caller.user, page).await?)
                },
            )
            .await?;
        let mut rows = self.articles_by_slug(&slugs).await?;
        // What the reader sees of them came with the page, whose entry
        // goes stale as soon as any article is favorited or unfavorited
        // (`articles`) or the reader follows or unfollows anyone; and a
        // feed holds only articles by authors the reader follows.
        for row in &mut rows {
            row.favorited = favorited.contains(&row.slug);
            row.following = true;
        }
        Ok(self
            .page(ArticlePage { rows, total }, page.limit, true)
            .await?
            .signed(&self.cursors))
    }

    /// These articles, in this order, as anybody sees them: from the
    /// cache (the entries `article` keeps), the misses read in one
    /// statement. Those gone meanwhile are left out.
    async fn articles_by_slug(&self, slugs: &[String]) -> Result<Vec<ArticleRow>, ContentError> {
        let entries: Vec<_> = slugs
            .iter()
            .map(|slug| {
                (
                    format!("article:{slug}"),
                    vec![versions::article(slug), versions::authors()],
                )
            })
            .collect();
        let found = self
            .cache
            .get_many_or_load("article", &entries, |misses: Vec<usize>| async move {
                let wanted: Vec<String> = misses.iter().map(|&i| slugs[i].clone()).collect();
                let mut rows = repo::by_slugs(&self.pool, &wanted).await?;
                self.fill_authors(&mut rows).await?;
                let mut by_slug: HashMap<String, ArticleRow> =
                    rows.into_iter().map(|r| (r.slug.clone(), r)).collect();
                Ok::<_, ContentError>(wanted.iter().map(|s| by_slug.remove(s)).collect())
            })
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The `limit` most used tags (0: the default), at most
    /// `MAX_LISTED_TAGS`: the list's size must not grow with whatever users
    /// invent.
    pub async fn tags(&self, limit: u32) -> Result<Vec<String>, ContentError> {
        let limit = match limit {
            0 => validation::DEFAULT_LISTED_TAGS,
            n => n.min(validation::MAX_LISTED_TAGS),
        };
        self.cache
            .get_or_load(
                "tags",
                &format!("tags:{limit}"),
                &[versions::articles()],
                || async { Ok(repo::tags_in_use(&self.pool, i64::from(limit)).await?) },
            )
            .await
    }

    /// Sets what `viewer` sees of each article: whether they favorited it
    /// and follow its author, in one statement for the whole page.
    async fn mark_for(
        &self,
        viewer: Option<Uuid>,
        articles: &mut [ArticleRow],
    ) -> Result<(), ContentError> {
        let Some(viewer) = viewer.filter(|_| !articles.is_empty()) else {
            return Ok(());
        };
        let ids: Vec<Uuid> = articles.iter().map(|a| a.id).collect();
        let mut authors: Vec<Uuid> = articles.iter().map(|a| a.author_id).collect();
        authors.sort_unstable();
        authors.dedup();
        let (favorited, following) = repo::viewer_marks(&self.pool, viewer, &ids, &authors).await?;
        for article in articles {
            article.favorited = favorited.contains(&article.id);
            article.following = following.contains(&article.author_id);
        }
        Ok(())
    }

    fn position(&self, cursor: Option<&str>, violations: &mut Violations) -> Option<Position> {
        let cursor = cursor.map(str::trim).filter(|c| !c.is_empty())?;
        match self.cursors.decode(cursor) {
            Ok(position) => Some(position),
            Err(e) => {
                violations.push(("cursor", e.to_string()));
                None
            }
        }
    }

    async fn page(
        &self,
        mut result: ArticlePage,
        limit: i64,
        keyset_ordered: bool,
    ) -> Result<Listed, ContentError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = result.rows.len() > limit;
        result.rows.truncate(limit);
        let next = match result.rows.last() {
            Some(last) if more && keyset_ordered => Some(Position {
                created_at: last.created_at,
                id: last.id,
            }),
            _ => None,
        };
        self.fill_authors(&mut result.rows).await?;
        Ok(Listed {
            articles: result.rows,
            total: u64::try_from(result.total).unwrap_or(0),
            next,
        })
    }

    /// Fills in authors missing from the read-model with one call to auth,
    /// dropping the articles of those it reports banned (the queries hide
    /// only the bans the read-model knows).
    async fn fill_authors(&self, articles: &mut Vec<ArticleRow>) -> Result<(), ContentError> {
        let missing: Vec<Uuid> = articles
            .iter()
            .filter(|a| a.author_username.is_none())
            .map(|a| a.author_id)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let authors = self.authors.by_ids(&missing).await?;
        for article in articles.iter_mut() {
            if let Some(author) = authors.get(&article.author_id) {
                article.author_username = Some(author.username.clone());
                article.author_bio.clone_from(&author.bio);
                article.author_image.clone_from(&author.image);
            }
        }
        articles.retain(|a| {
            !authors
                .get(&a.author_id)
                .is_some_and(|author| author.banned)
        });
        Ok(())
    }
}

/// The cache key of a list page: every part of the request, hashed, since
/// the filters are user text of any length.
fn list_key(filter: &ArticleFilter, page: &PageRequest) -> String {
    let request = format!(
        "{:?}",
        (
            &filter.tag,
            &filter.author,
            &filter.favorited_by,
            page.limit,
            page.offset,
            page.after
        )
    );
    format!(
        "list:{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(request.as_bytes()))
    )
}

fn page_request(limit: u32, offset: u32, after: Option<Position>) -> PageRequest {
    PageRequest {
        limit: validation::limit(limit),
        // A keyset page starts right after the cursor; the offset is spent.
        offset: if after.is_some() {
            0
        } else {
            i64::from(offset)
        },
        after: after.map(|p| (p.created_at, p.id)),
    }
}

/// Applies `changes` with the slug `base`, or `base` plus a random suffix
/// when another article holds it. Each try runs in a savepoint, so a unique
/// violation does not abort the surrounding transaction.
async fn update_with_free_slug(
    tx: &mut PgConnection,
    id: Uuid,
    base: &str,
    changes: &ArticleChanges<'_>,
) -> Result<String, ContentError> {
    let mut candidate = base.to_owned();
    for _ in 0..SLUG_ATTEMPTS {
        let mut savepoint = tx.begin().await?;
        let attempt = ArticleChanges {
            slug: Some(&candidate),
            ..*changes
        };
        match repo::update(&mut *savepoint, id, &attempt).await {
            Ok(()) => {
                savepoint.commit().await?;
                return Ok(candidate);
            }
            Err(e) if unique_violation(&e) == Some("articles_slug_key") => {
                savepoint.rollback().await?;
                candidate = slug::with_random_suffix(base, &mut rand::thread_rng());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ContentError::Internal(format!(
        "no free slug for {base:?} after {SLUG_ATTEMPTS} attempts"
    )))
}
