//! The caller's inbox, callable without gRPC: each use case takes the
//! verified user and plain values and returns domain values or a
//! `NotificationError`. Preferences are in `preferences.rs`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::NotificationError,
    repo::notifications::{self as repo, NotificationRow},
    rules::Kind,
};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

/// A stored notification, as its owner sees it.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: Uuid,
    /// `None` for a kind this build does not know (written by a newer one).
    pub kind: Option<Kind>,
    pub title: String,
    pub body: String,
    pub actor_username: Option<String>,
    pub article_slug: Option<String>,
    pub read: bool,
    pub created_at: DateTime<Utc>,
    /// Its place in its owner's stream: one committed later is further on.
    pub seq: i64,
}

impl From<NotificationRow> for Notification {
    fn from(row: NotificationRow) -> Self {
        Self {
            id: row.id,
            kind: Kind::parse(&row.kind),
            title: row.title,
            body: row.body,
            actor_username: row.actor_username,
            article_slug: row.article_slug,
            read: row.read_at.is_some(),
            created_at: row.created_at,
            seq: row.seq,
        }
    }
}

/// A place in a user's stream of notifications, as a client holds it and
/// as the service reads after it.
#[derive(Debug, Clone, Copy)]
pub struct StreamPosition {
    /// What a client resumes from (`after_id`): the notification at this
    /// place, or, before the user's first, the user's own id. Both stay
    /// the user's, so an id from another account is refused, not misread.
    pub id: Uuid,
    /// Every notification of the user up to this seq is behind it.
    pub seq: i64,
}

/// Which page of the inbox to read; a `limit` of 0 means the default.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery {
    pub unread_only: bool,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug)]
pub struct NotificationPage {
    pub notifications: Vec<Notification>,
    /// How many match the query in all pages.
    pub total: u64,
}

#[derive(Clone)]
pub struct Inbox {
    pub(crate) pool: PgPool,
}

impl Inbox {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One page of `user`'s notifications, newest first.
    pub async fn list(
        &self,
        user: Uuid,
        query: ListQuery,
    ) -> Result<NotificationPage, NotificationError> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        // The page and its total come from one snapshot: two plain reads let
        // a notification committed in between make them disagree (an empty
        // page with a total of 1).
        let mut snapshot = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let rows = repo::list(
            &mut *snapshot,
            user,
            query.unread_only,
            i64::from(limit),
            i64::from(query.offset),
        )
        .await?;
        let total = repo::count(&mut *snapshot, user, query.unread_only).await?;
        snapshot.commit().await?;
        Ok(NotificationPage {
            notifications: rows.into_iter().map(Notification::from).collect(),
            total: total.unsigned_abs(),
        })
    }

    /// Where a stream of `user` starts: after `after` (an id a stream
    /// gave out, see [`StreamPosition::id`]) when resuming, otherwise after
    /// their latest notification.
    pub async fn stream_start(
        &self,
        user: Uuid,
        after: Option<Uuid>,
    ) -> Result<StreamPosition, NotificationError> {
        let Some(id) = after else {
            let (id, seq) = repo::latest(&self.pool, user).await?.unwrap_or((user, 0));
            return Ok(StreamPosition { id, seq });
        };
        let seq = if id == user {
            Some(0)
        } else {
            repo::seq_of(&self.pool, user, id).await?
        };
        let seq = seq.ok_or_else(|| {
            NotificationError::invalid("after_id", "names none of your notifications")
        })?;
        Ok(StreamPosition { id, seq })
    }

    /// Up to `limit` of `user`'s notifications after place `seq`, in
    /// their stream's order: what a stream that ended there missed.
    pub async fn missed(
        &self,
        user: Uuid,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, NotificationError> {
        let rows = repo::after(&self.pool, user, seq, i64::from(limit)).await?;
        Ok(rows.into_iter().map(Notification::from).collect())
    }

    pub async fn unread_count(&self, user: Uuid) -> Result<u64, NotificationError> {
        Ok(repo::count(&self.pool, user, true).await?.unsigned_abs())
    }

    pub async fn mark_read(&self, user: Uuid, id: &str) -> Result<(), NotificationError> {
        // Someone else's notification and no notification look the same.
        let id =
            Uuid::parse_str(id.trim()).map_err(|_| NotificationError::NotFound("notification"))?;
        if !repo::mark_read(&self.pool, user, id).await? {
            return Err(NotificationError::NotFound("notification"));
        }
        Ok(())
    }

    /// Returns how many were unread.
    pub async fn mark_all_read(&self, user: Uuid) -> Result<u64, NotificationError> {
        Ok(repo::mark_all_read(&self.pool, user).await?)
    }
}
