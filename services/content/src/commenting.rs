//! Writing new comments, in batches (see `batches`). A batch is one
//! acquisition of a connection and two statements, however many comments
//! it holds: where each goes (its article, its commenter, its id), then the
//! comments with their events. A comment on its own used to cost three
//! statements (the commenter, the article, the insert) and a commit of its
//! own; now one alone costs two, and the comments that arrive together
//! share them.

use std::collections::HashMap;

use quill_events::{EventOrigin, outbox::OutboxRow};
use quill_platform::cache::{Invalidation, Version};
use quill_proto::events::v1::{CommentAdded, envelope::Payload};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    batches::{self, Batches, Failed},
    error::ContentError,
    events::{PRODUCER, snapshot},
    read_cache::{ReadCache, changed_by},
    repo::{
        articles::{self as article_repo, CommentPlace},
        comments::{self as repo, CommentRow, HeldArticles, NewComment},
    },
};

/// A valid new comment, on its way to a writer.
pub(crate) struct Draft {
    pub commenter: Uuid,
    pub slug: String,
    pub body: String,
    /// The request's trace and id, which its event carries on.
    pub origin: EventOrigin,
    /// The request's span, which the write's span is a child of.
    pub span: tracing::Span,
}

pub(crate) enum Outcome {
    Added(Box<AddedComment>),
    /// No visible article has the slug.
    NoArticle,
    /// Nothing was written: the commenter is not in the read-model yet.
    NewCommenter(Draft),
    /// Nothing was written: the article was edited between the read and
    /// the write, or, in a batch, another transaction held it.
    Moved(Draft),
}

pub(crate) struct AddedComment {
    /// As its author sees it: nobody follows themselves.
    pub comment: CommentRow,
    /// The article's slug as it stands.
    pub slug: String,
    /// The bump of what the comment made stale, shared by its whole batch:
    /// the answer waits for it, so that the commenter reads their own write.
    pub invalidated: Invalidation,
}

pub(crate) type Answer = Result<Outcome, ContentError>;

pub(crate) type Commenting = Batches<Draft, Answer>;

/// Starts the writers of new comments.
pub(crate) fn start(pool: PgPool, cache: ReadCache) -> Commenting {
    Batches::start(
        "comments",
        batches::WRITERS,
        batches::MAX_BATCH,
        batches::QUEUED,
        move |drafts| {
            let (pool, cache) = (pool.clone(), cache.clone());
            async move {
                batches::each_alone_if_rejected("comments", drafts, |drafts| {
                    write_together(&pool, &cache, drafts, HeldArticles::Skip)
                })
                .await
            }
        },
    )
}

/// Writes `draft` on its own, in the caller's task, waiting for whoever
/// holds its article: a comment that met an edit in a batch goes this way,
/// so that only its own request waits.
pub(crate) async fn write_alone(pool: &PgPool, cache: &ReadCache, draft: Draft) -> Answer {
    write_together(pool, cache, vec![draft], HeldArticles::Wait)
        .await
        .map(|mut outcomes| outcomes.remove(0))
        .map_err(|failed| failed.error)
}

/// A comment as it is about to be written.
struct Announced {
    event: OutboxRow,
    stale: Vec<Version>,
}

/// Answers each draft, in order, or fails as a whole, having written
/// nothing.
async fn write_together(
    pool: &PgPool,
    cache: &ReadCache,
    drafts: Vec<Draft>,
    held: HeldArticles,
) -> Result<Vec<Outcome>, Failed<Draft>> {
    let written = async {
        let mut db = pool.acquire().await?;
        let slugs: Vec<&str> = drafts.iter().map(|draft| draft.slug.as_str()).collect();
        let commenters: Vec<Uuid> = drafts.iter().map(|draft| draft.commenter).collect();
        let mut places: Vec<Option<CommentPlace>> = drafts.iter().map(|_| None).collect();
        for place in article_repo::comment_places(&mut *db, &slugs, &commenters).await? {
            if let Some(slot) = usize::try_from(place.draft)
                .ok()
                .and_then(|index| places.get_mut(index))
            {
                *slot = Some(place);
            }
        }
        let announced = drafts
            .iter()
            .zip(&places)
            .map(|(draft, place)| {
                place
                    .as_ref()
                    .filter(|place| place.commenter_username.is_some())
                    .map(|place| to_announce(draft, place))
                    .transpose()
            })
            .collect::<Result<Vec<_>, ContentError>>()?;

        let new: Vec<NewComment<'_>> = drafts
            .iter()
            .zip(&places)
            .zip(&announced)
            .filter_map(|((draft, place), announced)| {
                let (place, Announced { event, .. }) = (place.as_ref()?, announced.as_ref()?);
                Some(NewComment {
                    id: place.comment_id,
                    article_id: place.article.id,
                    author_id: draft.commenter,
                    body: &draft.body,
                    seen: place.article.updated_at,
                    event,
                })
            })
            .collect();
        let _spans =
            batches::write_spans(drafts.iter().zip(&announced).map(|(draft, announced)| {
                (
                    &draft.span,
                    announced.as_ref().map(|announced| &announced.event),
                )
            }));
        if new.is_empty() {
            return Ok((places, announced, HashMap::new()));
        }
        let rows = repo::insert_announced(&mut *db, &new, held).await?;
        let stored = batches::stored_by(rows, |row| row.id);
        Ok::<_, ContentError>((places, announced, stored))
    }
    .await;
    let (places, announced, stored) = match written {
        Ok(written) => written,
        Err(error) => return Err(Failed::of(error, drafts)),
    };
    let invalidated = cache.start_invalidation(
        places
            .iter()
            .zip(&announced)
            .filter_map(|(place, announced)| {
                stored
                    .contains_key(&place.as_ref()?.comment_id)
                    .then_some(announced.as_ref()?)
            })
            .flat_map(|announced| announced.stale.iter().cloned())
            .collect(),
    );
    Ok(drafts
        .into_iter()
        .zip(places)
        .zip(announced)
        .map(|((draft, place), announced)| {
            let Some(place) = place else {
                return Outcome::NoArticle;
            };
            if announced.is_none() {
                return Outcome::NewCommenter(draft);
            }
            let Some(row) = stored.get(&place.comment_id) else {
                return Outcome::Moved(draft);
            };
            Outcome::Added(Box::new(added(draft, place, row, invalidated.clone())))
        })
        .collect())
}

/// The event announcing `draft` at `place`, and the cached reads it makes
/// stale. The article's author comes with it, so notification can tell
/// them.
fn to_announce(draft: &Draft, place: &CommentPlace) -> Result<Announced, ContentError> {
    let added = Payload::CommentAdded(CommentAdded {
        comment_id: place.comment_id,
        body: draft.body.clone(),
        commenter_id: draft.commenter.to_string(),
        commenter_username: place.commenter_username.clone().unwrap_or_default(),
        article: Some(snapshot(place.article.clone())),
    });
    let stale = changed_by(&added);
    let event = OutboxRow::of(&draft.origin.clone().envelope(PRODUCER, added))?;
    Ok(Announced { event, stale })
}

fn added(
    draft: Draft,
    place: CommentPlace,
    row: &repo::Inserted,
    invalidated: Invalidation,
) -> AddedComment {
    AddedComment {
        comment: CommentRow {
            id: place.comment_id,
            body: draft.body,
            created_at: row.created_at,
            updated_at: row.updated_at,
            author_id: draft.commenter,
            author_username: place.commenter_username,
            author_bio: place.commenter_bio,
            author_image: place.commenter_image,
            // Nobody follows themselves.
            following: false,
        },
        slug: place.article.slug,
        invalidated,
    }
}
