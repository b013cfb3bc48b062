//! What content keeps in the Redis cache ([`quill_platform::cache`]), and
//! which changes make it stale.
//!
//! Cached are the viewer-independent parts of the hot reads: an article by
//! slug, a page of the article list (not a search), a page of an article's
//! comments, the tag list, a profile by username; and which articles a
//! page of a user's feed holds (the articles themselves are the shared
//! entries). What one viewer sees of them (`favorited`, `following`) is
//! read per request, for a whole page in one statement.
//!
//! The versions they depend on:
//! - `articles`: any article published, edited, deleted, favorited or
//!   unfavorited (lists, counts and tags all follow from these);
//! - `article:{slug}`: that article (under its old and its new slug when an
//!   edit moves it);
//! - `comments:{slug}`: a comment added to or deleted from that article;
//! - `follows:{user}`: that user followed or unfollowed someone (which
//!   articles their feed holds);
//! - `authors`: any change to the authors read-model (a name, bio, image or
//!   ban shows in every article and profile).
//!
//! An announced change bumps them at least twice: its writer right after
//! its commit, so the writer reads its own write (a batch of new articles
//! or comments bumps what all of them changed at once, and answers each
//! request after that one bump), and the outbox relay once the change's
//! event is sent ([`RelayInvalidation`]), so a writer that died
//! between its commit and its bump is covered by whichever replica sends
//! its event. The changes no event announces (an unfavorite, an unfollow, a
//! deleted comment) have their writer's bump alone, which runs to its end
//! even when the request is cancelled after the commit; losing it (a crash,
//! Redis down) leaves their entries until the TTL. Changes to authors arrive
//! as auth's events and bump after their consumer's commit.

use std::time::Duration;

use quill_events::{Published, async_trait};
use quill_platform::cache::{Cache, Version};
use quill_proto::events::v1::{Envelope, envelope::Payload};

/// The versions content's entries depend on.
pub mod versions {
    use quill_platform::cache::Version;
    use uuid::Uuid;

    pub fn articles() -> Version {
        Version::new("articles")
    }

    pub fn article(slug: &str) -> Version {
        Version::new(format!("article:{slug}"))
    }

    pub fn comments(slug: &str) -> Version {
        Version::new(format!("comments:{slug}"))
    }

    pub fn follows(follower: Uuid) -> Version {
        Version::new(format!("follows:{follower}"))
    }

    pub fn authors() -> Version {
        Version::new("authors")
    }
}

/// Content's cache (`CONTENT_CACHE_TTL_SECS=0`: off, every read goes to
/// the database), its keys under `{REDIS_PREFIX}content:`.
pub type ReadCache = Cache;

pub fn read_cache(redis: redis::aio::ConnectionManager, prefix: &str, ttl: Duration) -> ReadCache {
    Cache::new(redis, format!("{prefix}content:"), ttl)
}

/// The versions a content event's change makes stale.
pub fn changed_by(payload: &Payload) -> Vec<Version> {
    let article = |snapshot: &Option<quill_proto::events::v1::ArticleSnapshot>| {
        snapshot.as_ref().map(|a| versions::article(&a.slug))
    };
    match payload {
        Payload::ArticlePublished(e) => [Some(versions::articles()), article(&e.article)]
            .into_iter()
            .flatten()
            .collect(),
        Payload::ArticleUpdated(e) => [
            Some(versions::articles()),
            article(&e.article),
            e.previous_slug.as_deref().map(versions::article),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Payload::ArticleDeleted(e) => vec![versions::articles(), versions::article(&e.slug)],
        Payload::ArticleFavorited(e) => [Some(versions::articles()), article(&e.article)]
            .into_iter()
            .flatten()
            .collect(),
        Payload::CommentAdded(e) => e
            .article
            .iter()
            .map(|a| versions::comments(&a.slug))
            .collect(),
        Payload::UserFollowed(e) => e
            .follower_id
            .parse()
            .map(versions::follows)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// The relay's half of invalidation: what each sent event changed.
pub struct RelayInvalidation(pub ReadCache);

#[async_trait]
impl Published for RelayInvalidation {
    async fn published(&self, events: &[Envelope]) {
        let mut stale: Vec<Version> = events
            .iter()
            .filter_map(|e| e.payload.as_ref())
            .flat_map(changed_by)
            .collect();
        stale.sort();
        stale.dedup();
        self.0.invalidate(&stale).await;
    }
}

#[cfg(test)]
mod tests {
    use quill_proto::events::v1::{ArticleDeleted, ArticleSnapshot, ArticleUpdated, CommentAdded};

    use super::*;

    #[test]
    fn an_edit_that_moves_an_article_stales_both_slugs() {
        let moved = Payload::ArticleUpdated(ArticleUpdated {
            article: Some(ArticleSnapshot {
                slug: "new".into(),
                ..Default::default()
            }),
            previous_slug: Some("old".into()),
        });
        assert_eq!(
            changed_by(&moved),
            vec![
                versions::articles(),
                versions::article("new"),
                versions::article("old")
            ]
        );
        let deleted = Payload::ArticleDeleted(ArticleDeleted {
            slug: "gone".into(),
            ..Default::default()
        });
        assert_eq!(
            changed_by(&deleted),
            vec![versions::articles(), versions::article("gone")]
        );
        let commented = Payload::CommentAdded(CommentAdded {
            article: Some(ArticleSnapshot {
                slug: "talked-about".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            changed_by(&commented),
            vec![versions::comments("talked-about")]
        );
        assert!(changed_by(&Payload::UserFollowed(Default::default())).is_empty());
        let follower = uuid::Uuid::now_v7();
        let followed = Payload::UserFollowed(quill_proto::events::v1::UserFollowed {
            follower_id: follower.to_string(),
            ..Default::default()
        });
        assert_eq!(changed_by(&followed), vec![versions::follows(follower)]);
    }
}
