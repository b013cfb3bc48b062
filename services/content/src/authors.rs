//! The authors read-model: who wrote what, as auth last told us. `user.*`
//! events keep it current (see `events`); a miss costs one batched call to
//! auth for every missing id of a request, never a call per row. Every user content stores (author, commenter, favoriter,
//! follower, followee) is put here when they first act, so listings and
//! username filters join it in SQL.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};

use quill_platform::grpc::ServiceChannel;
use quill_proto::auth::v1::{
    self as auth_pb, GetUserByUsernameRequest, GetUsersByIdsRequest,
    auth_service_client::AuthServiceClient,
};
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

use crate::{
    error::ContentError,
    read_cache::{ReadCache, versions},
    repo::authors::{self, AuthorRow},
};

/// Deadline of one call to auth.
const AUTH_CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Authors {
    pool: PgPool,
    auth: AuthServiceClient<ServiceChannel>,
    /// Every article and profile shows its author: what this writes makes
    /// them stale.
    cache: ReadCache,
}

impl Authors {
    pub fn new(pool: PgPool, auth: ServiceChannel, cache: ReadCache) -> Self {
        Self {
            pool,
            auth: quill_platform::message_limits!(AuthServiceClient::new(auth)),
            cache,
        }
    }

    /// The authors with these ids, fetching the missing ones from auth in
    /// one call. Ids auth does not know are absent from the result.
    pub async fn by_ids(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, AuthorRow>, ContentError> {
        let mut found: HashMap<Uuid, AuthorRow> = authors::by_ids(&self.pool, ids)
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect();
        let mut missing: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !found.contains_key(id))
            .collect();
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            for author in self.fetch_and_store(&missing).await? {
                found.insert(author.id, author);
            }
        }
        Ok(found)
    }

    /// The author with this id; a user auth does not know cannot act here.
    pub async fn ensure(&self, id: Uuid) -> Result<AuthorRow, ContentError> {
        self.by_ids(&[id])
            .await?
            .remove(&id)
            .ok_or(ContentError::Unauthenticated("unknown user"))
    }

    /// Copies what auth holds about `id` now, over whatever the read-model
    /// had (unless an event newer than this call already arrived).
    pub async fn refresh(&self, id: Uuid) -> Result<AuthorRow, ContentError> {
        self.fetch_and_store(&[id])
            .await?
            .into_iter()
            .next()
            .ok_or(ContentError::NotFound("user"))
    }

    /// Resolves a username through the read-model, then auth.
    pub async fn by_username(&self, username: &str) -> Result<AuthorRow, ContentError> {
        if let Some(author) = authors::by_username(&self.pool, username).await? {
            return Ok(author);
        }
        let asked_at = Utc::now();
        let mut request = tonic::Request::new(GetUserByUsernameRequest {
            username: username.to_owned(),
        });
        request.set_timeout(AUTH_CALL_TIMEOUT);
        let profile = match self.auth.clone().get_user_by_username(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                return Err(ContentError::NotFound("profile"));
            }
            Err(status) => return Err(ContentError::auth_unavailable(status)),
        };
        let author = author_of(profile).ok_or(ContentError::NotFound("profile"))?;
        self.store(std::slice::from_ref(&author), asked_at).await?;
        Ok(author)
    }

    async fn fetch_and_store(&self, ids: &[Uuid]) -> Result<Vec<AuthorRow>, ContentError> {
        let asked_at = Utc::now();
        let mut request = tonic::Request::new(GetUsersByIdsRequest {
            ids: ids.iter().map(Uuid::to_string).collect(),
        });
        request.set_timeout(AUTH_CALL_TIMEOUT);
        let users = self
            .auth
            .clone()
            .get_users_by_ids(request)
            .await
            .map_err(ContentError::auth_unavailable)?
            .into_inner()
            .users;
        let fetched: Vec<AuthorRow> = users.into_iter().filter_map(author_of).collect();
        self.store(&fetched, asked_at).await?;
        Ok(fetched)
    }

    async fn store(
        &self,
        fetched: &[AuthorRow],
        asked_at: DateTime<Utc>,
    ) -> Result<(), ContentError> {
        if authors::upsert(&self.pool, fetched, asked_at).await? > 0 {
            self.cache.invalidate(&[versions::authors()]).await;
        }
        Ok(())
    }
}

fn author_of(profile: auth_pb::Profile) -> Option<AuthorRow> {
    Some(AuthorRow {
        id: profile.id.parse().ok()?,
        username: profile.username,
        bio: profile.bio,
        image: profile.image,
        banned: profile.banned,
    })
}
