//! Writing new articles, in batches (see `batches`). A batch is one
//! acquisition of a connection and two statements, however many articles it
//! holds: the authors with the followers their events carry, then the
//! articles with their tag links and events (and a third first when a tag
//! is new to this process). Under load a new article used
//! to cost content's database three round trips and a commit of its own;
//! now the articles that arrive together share them.

use std::{collections::HashMap, sync::Arc};

use quill_events::{EventOrigin, outbox::OutboxRow};
use quill_platform::cache::{Invalidation, Version};
use quill_proto::events::v1::{ArticlePublished, Followers, envelope::Payload};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    batches::{self, Batches, Failed},
    error::ContentError,
    events::{PRODUCER, snapshot_of},
    known_tags::KnownTags,
    read_cache::{ReadCache, changed_by},
    repo::{
        articles::{self as repo, ArticleRow, NewArticle},
        authors::{self, WithFollowers},
    },
};

/// A new article's event carries its author's followers when there are at
/// most this many (about 19 KB of ids), so the fan-out asks content for
/// nothing; a larger audience is streamed by the notification service.
const CARRIED_FOLLOWERS: usize = 500;

/// A valid new article, on its way to a writer.
pub(crate) struct Draft {
    pub author: Uuid,
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
    pub tags: Vec<String>,
    /// The request's trace and id, which its event carries on.
    pub origin: EventOrigin,
    /// The request's span, which the write's span is a child of.
    pub span: tracing::Span,
}

pub(crate) enum Outcome {
    Published(Box<PublishedArticle>),
    /// Nothing was written: the slug is taken.
    SlugTaken(Draft),
    /// Nothing was written: the author is not in the read-model yet.
    NewAuthor(Draft),
}

pub(crate) struct PublishedArticle {
    /// As its author sees it: no favorites, and nobody follows themselves.
    pub article: ArticleRow,
    /// The cached reads the article makes stale, bumped again after a
    /// relink of its tags.
    pub stale: Vec<Version>,
    /// The bump of `stale`, shared by the article's whole batch: the answer
    /// waits for it, so that the author reads their own write.
    pub invalidated: Invalidation,
    /// Some tag did not exist after all, so not every link was written.
    pub missing_links: bool,
}

pub(crate) type Answer = Result<Outcome, ContentError>;

pub(crate) type Publishing = Batches<Draft, Answer>;

/// Starts the writers of new articles.
pub(crate) fn start(pool: PgPool, cache: ReadCache, known_tags: Arc<KnownTags>) -> Publishing {
    Batches::start(
        "articles",
        batches::WRITERS,
        batches::MAX_BATCH,
        batches::QUEUED,
        move |drafts| {
            let (pool, cache) = (pool.clone(), cache.clone());
            let known_tags = Arc::clone(&known_tags);
            async move { write(&pool, &cache, &known_tags, drafts).await }
        },
    )
}

/// Answers each draft (see `batches::each_alone_if_rejected`).
async fn write(
    pool: &PgPool,
    cache: &ReadCache,
    known_tags: &KnownTags,
    drafts: Vec<Draft>,
) -> Vec<Answer> {
    batches::each_alone_if_rejected("articles", drafts, |drafts| {
        write_together(pool, cache, known_tags, drafts)
    })
    .await
}

/// An article as it is about to be written.
struct Announced {
    article: ArticleRow,
    event: OutboxRow,
    stale: Vec<Version>,
}

/// Answers each draft, in order, or fails as a whole, having written
/// nothing.
async fn write_together(
    pool: &PgPool,
    cache: &ReadCache,
    known_tags: &KnownTags,
    drafts: Vec<Draft>,
) -> Result<Vec<Outcome>, Failed<Draft>> {
    let written = async {
        let mut db = pool.acquire().await?;
        let mut unknown: Vec<String> = drafts
            .iter()
            .flat_map(|draft| known_tags.unknown(&draft.tags))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            repo::create_tags(&mut *db, &unknown).await?;
            known_tags.learn(&unknown);
        }
        let mut ids: Vec<Uuid> = drafts.iter().map(|draft| draft.author).collect();
        ids.sort_unstable();
        ids.dedup();
        let limit = i64::try_from(CARRIED_FOLLOWERS)
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        let authors: HashMap<Uuid, WithFollowers> = authors::with_followers(&mut *db, &ids, limit)
            .await?
            .into_iter()
            .map(|found| (found.author.id, found))
            .collect();
        let announced = drafts
            .iter()
            .map(|draft| {
                authors
                    .get(&draft.author)
                    .map(|author| to_publish(draft, author))
                    .transpose()
            })
            .collect::<Result<Vec<_>, ContentError>>()?;

        let mut new: Vec<NewArticle<'_>> = drafts
            .iter()
            .zip(&announced)
            .filter_map(|(draft, announced)| {
                let Announced { article, event, .. } = announced.as_ref()?;
                Some(NewArticle {
                    id: article.id,
                    slug: &draft.slug,
                    title: &draft.title,
                    description: &draft.description,
                    body: &draft.body,
                    author_id: draft.author,
                    tags: &draft.tags,
                    event,
                })
            })
            .collect();
        // Writers that insert their slugs in one order never wait on each
        // other in a cycle.
        new.sort_unstable_by(|a, b| a.slug.cmp(b.slug));
        let _spans =
            batches::write_spans(drafts.iter().zip(&announced).map(|(draft, announced)| {
                (
                    &draft.span,
                    announced.as_ref().map(|announced| &announced.event),
                )
            }));
        // Every author new here: nothing to write until auth was asked.
        if new.is_empty() {
            return Ok((announced, HashMap::new()));
        }
        let stored = batches::stored_by(repo::publish(&mut *db, &new).await?, |row| row.id);
        Ok::<_, ContentError>((announced, stored))
    }
    .await;
    let (announced, stored) = match written {
        Ok(written) => written,
        Err(error) => return Err(Failed::of(error, drafts)),
    };
    let invalidated = cache.start_invalidation(
        announced
            .iter()
            .flatten()
            .filter(|announced| stored.contains_key(&announced.article.id))
            .flat_map(|announced| announced.stale.iter().cloned())
            .collect(),
    );
    Ok(drafts
        .into_iter()
        .zip(announced)
        .map(|(draft, announced)| {
            let Some(Announced {
                mut article, stale, ..
            }) = announced
            else {
                return Outcome::NewAuthor(draft);
            };
            let Some(row) = stored.get(&article.id) else {
                return Outcome::SlugTaken(draft);
            };
            article.created_at = row.created_at;
            article.updated_at = row.updated_at;
            Outcome::Published(Box::new(PublishedArticle {
                missing_links: usize::try_from(row.linked).ok() != Some(article.tags.len()),
                article,
                stale,
                invalidated: invalidated.clone(),
            }))
        })
        .collect())
}

/// The article `draft` would be, by `author`, with the event announcing it
/// and the cached reads it makes stale.
fn to_publish(draft: &Draft, author: &WithFollowers) -> Result<Announced, ContentError> {
    let article = ArticleRow {
        id: Uuid::now_v7(),
        slug: draft.slug.clone(),
        title: draft.title.clone(),
        description: draft.description.clone(),
        body: draft.body.clone(),
        author_id: draft.author,
        created_at: Default::default(),
        updated_at: Default::default(),
        author_username: Some(author.author.username.clone()),
        author_bio: author.author.bio.clone(),
        author_image: author.author.image.clone(),
        tags: draft.tags.clone(),
        favorites_count: 0,
        favorited: false,
        following: false,
    };
    let followers = (author.followers.len() <= CARRIED_FOLLOWERS).then(|| Followers {
        user_ids: author.followers.iter().map(Uuid::to_string).collect(),
    });
    let published = Payload::ArticlePublished(ArticlePublished {
        article: Some(snapshot_of(&article)),
        followers,
    });
    let stale = changed_by(&published);
    let event = OutboxRow::of(&draft.origin.clone().envelope(PRODUCER, published))?;
    Ok(Announced {
        article,
        event,
        stale,
    })
}
