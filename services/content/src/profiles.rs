//! Profiles and follows, and the follower fan-out other services stream.

use chrono::{DateTime, Utc};
use quill_proto::events::v1::{UserFollowed, envelope::Payload};
use uuid::Uuid;

use crate::{
    error::ContentError,
    events::announce,
    policy::{self, Caller},
    read_cache::{changed_by, versions},
    repo::{authors::AuthorRow, follows},
    service::Content,
    validation,
};

pub const DEFAULT_FOLLOWER_BATCH: u32 = 500;
pub const MAX_FOLLOWER_BATCH: u32 = 5_000;

/// A user as the viewer sees them.
#[derive(Debug, Clone)]
pub struct ProfileView {
    pub author: AuthorRow,
    pub following: bool,
}

impl Content {
    pub async fn profile(
        &self,
        viewer: Option<&Caller>,
        username: &str,
    ) -> Result<ProfileView, ContentError> {
        let username = validation::username(username)?;
        let author = self
            .cache
            .get_or_load(
                "profile",
                &format!("profile:{}", username.to_lowercase()),
                &[versions::authors()],
                || self.authors.by_username(username),
            )
            .await?;
        let following = match viewer {
            Some(viewer) => follows::exists(&self.pool, viewer.user, author.id).await?,
            None => false,
        };
        Ok(ProfileView { author, following })
    }

    /// Content's copy of `user` made current, for read-your-writes after a
    /// change in auth.
    pub async fn refresh_author(&self, caller: &Caller, user: Uuid) -> Result<(), ContentError> {
        policy::may_refresh_author(caller, user)?;
        self.authors.refresh(user).await?;
        Ok(())
    }

    /// Idempotent in both directions; following yourself is refused. Only a
    /// new follow is announced.
    pub async fn follow(
        &self,
        caller: &Caller,
        username: &str,
        follow: bool,
    ) -> Result<ProfileView, ContentError> {
        let username = validation::username(username)?;
        let author = self.authors.by_username(username).await?;
        if author.id == caller.user {
            return Err(ContentError::invalid(
                "username",
                "is you; you cannot follow yourself",
            ));
        }
        let follower = match follow {
            true => Some(self.authors.ensure(caller.user).await?),
            false => None,
        };
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let mut stale = Vec::new();
        if let Some(follower) = follower {
            if follows::insert(&mut *tx, caller.user, author.id, now).await? {
                let followed = Payload::UserFollowed(UserFollowed {
                    follower_id: follower.id.to_string(),
                    follower_username: follower.username,
                    followee_id: author.id.to_string(),
                    followee_username: author.username.clone(),
                });
                stale = changed_by(&followed);
                announce(&mut tx, followed).await?;
            }
        } else {
            follows::delete(&mut *tx, caller.user, author.id, now).await?;
            // Not announced, so only this writer makes it stale.
            stale = vec![versions::follows(caller.user)];
        }
        quill_events::outbox::commit(tx).await?;
        self.cache.invalidate(&stale).await;
        Ok(ProfileView {
            author,
            following: follow,
        })
    }

    /// One batch of the followers of `user_id` after `after`, as they were
    /// at `as_of` (now when unset).
    pub async fn follower_batch(
        &self,
        user_id: Uuid,
        after: Option<Uuid>,
        batch_size: u32,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<Uuid>, ContentError> {
        Ok(follows::follower_ids(&self.pool, user_id, after, i64::from(batch_size), as_of).await?)
    }
}

/// 0 means the default; larger than the maximum is capped.
pub fn follower_batch_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_FOLLOWER_BATCH,
        n => n.min(MAX_FOLLOWER_BATCH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_default_and_cap() {
        assert_eq!(follower_batch_size(0), 500);
        assert_eq!(follower_batch_size(3), 3);
        assert_eq!(follower_batch_size(1_000_000), 5_000);
    }
}
