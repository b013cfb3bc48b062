//! Content's events. It announces articles, comments, favorites and follows,
//! each written to the outbox in the transaction of the change, and applies
//! auth's `user.*` events to the authors read-model.

use quill_events::{EventHandler, HandlerError, async_trait, enqueue, new_envelope};
use quill_platform::time::from_proto;
use quill_proto::events::v1::{ArticleSnapshot, Envelope, envelope::Payload};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    error::ContentError,
    read_cache::{ReadCache, versions},
    repo::{
        articles::{self, ArticleRow, ArticleSummary},
        authors::{self, AuthorRow},
    },
};

/// The `producer` of content's envelopes.
pub const PRODUCER: &str = "content";

/// Writes `payload` to the outbox on `tx`, the transaction of the change.
pub async fn announce(tx: &mut PgConnection, payload: Payload) -> Result<(), sqlx::Error> {
    enqueue(tx, &new_envelope(PRODUCER, payload)).await
}

/// Article `id` as it stands inside `tx`, for an event payload.
pub async fn article_snapshot(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<ArticleSnapshot, ContentError> {
    let summary = articles::summary(tx, id)
        .await?
        .ok_or_else(|| ContentError::Internal(format!("article {id} vanished mid-transaction")))?;
    Ok(snapshot(summary))
}

/// The snapshot of an article already read in full.
pub fn snapshot_of(article: &ArticleRow) -> ArticleSnapshot {
    snapshot(ArticleSummary {
        id: article.id,
        slug: article.slug.clone(),
        title: article.title.clone(),
        description: article.description.clone(),
        author_id: article.author_id,
        author_username: article.author_username.clone(),
        tags: article.tags.clone(),
        updated_at: article.updated_at,
    })
}

/// The snapshot of an article as events tell it.
pub fn snapshot(article: ArticleSummary) -> ArticleSnapshot {
    ArticleSnapshot {
        id: article.id.to_string(),
        slug: article.slug,
        title: article.title,
        description: article.description,
        author_id: article.author_id.to_string(),
        // Every author is in the read-model before they can publish.
        author_username: article.author_username.unwrap_or_default(),
        tags: article.tags,
    }
}

/// Applies `user.registered`, `user.updated` and `user.banned` to the
/// authors read-model. Each carries the whole user, so applying one is an
/// upsert (idempotent by construction); a snapshot older than the row's is
/// skipped, so events applied out of order cannot undo a later change.
/// Once committed, cached reads that show authors are stale.
pub struct UserEvents {
    pub cache: ReadCache,
}

#[async_trait]
impl EventHandler for UserEvents {
    type Prepared = ();
    type Deferred = ();
    type Finished = ();

    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        envelope: &Envelope,
        _: &(),
        _: &mut (),
    ) -> Result<(), HandlerError> {
        let (user, banned) = match &envelope.payload {
            Some(Payload::UserRegistered(e)) => (e.user.as_ref(), None),
            Some(Payload::UserUpdated(e)) => (e.user.as_ref(), None),
            Some(Payload::UserBanned(e)) => (e.user.as_ref(), Some(e.banned)),
            // Not a user event: nothing here copies it.
            _ => return Ok(()),
        };
        let user = user.ok_or_else(|| HandlerError::permanent("user event without a user"))?;
        let as_of = envelope
            .occurred_at
            .as_ref()
            .and_then(from_proto)
            .ok_or_else(|| HandlerError::permanent("event without a valid occurred_at"))?;
        let author = AuthorRow {
            id: user.id.parse().map_err(HandlerError::permanent)?,
            username: user.username.clone(),
            bio: user.bio.clone(),
            image: user.image.clone(),
            banned: banned.unwrap_or(user.banned),
        };
        authors::upsert(&mut **tx, &[author], as_of).await?;
        Ok(())
    }

    /// A registration changes nothing anybody was shown: a new user has
    /// written nothing yet (and one content met first was fetched from
    /// auth as they are).
    async fn committed(&self, applied: &[&Envelope], (): ()) {
        let users_changed = applied.iter().any(|e| {
            matches!(
                e.payload,
                Some(Payload::UserUpdated(_) | Payload::UserBanned(_))
            )
        });
        if users_changed {
            self.cache.invalidate(&[versions::authors()]).await;
        }
    }
}
