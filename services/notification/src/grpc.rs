//! The gRPC face of notification: take the caller the authentication layer
//! established, translate messages, and run the (small) queries.

use std::{collections::HashMap, pin::Pin, time::Duration};

use futures::{Stream, StreamExt};
use quill_platform::{
    authn::{self, Authenticator},
    time::to_proto,
};
use quill_proto::notification::v1::{self as pb, notification_service_server::NotificationService};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{error::NotificationError, live::Hub, repo, rules::Kind};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

pub struct NotificationGrpc {
    pool: PgPool,
    hub: Hub,
    /// Re-checks the sessions of live streams.
    authn: Authenticator,
    stream_recheck: Duration,
}

impl NotificationGrpc {
    pub fn new(pool: PgPool, hub: Hub, authn: Authenticator, stream_recheck: Duration) -> Self {
        Self {
            pool,
            hub,
            authn,
            stream_recheck,
        }
    }

    async fn preferences(&self, user: Uuid) -> Result<pb::Preferences, NotificationError> {
        let email_enabled = repo::email_enabled(&self.pool, user).await?.unwrap_or(true);
        let stored: HashMap<String, (bool, bool)> = repo::kind_preferences(&self.pool, user)
            .await?
            .into_iter()
            .map(|(kind, in_app, email)| (kind, (in_app, email)))
            .collect();
        Ok(pb::Preferences {
            email_enabled,
            kinds: Kind::ALL
                .into_iter()
                .map(|kind| {
                    let (in_app, email) =
                        stored.get(kind.as_str()).copied().unwrap_or((true, true));
                    pb::KindPreference {
                        kind: kind.to_proto().into(),
                        in_app,
                        email,
                    }
                })
                .collect(),
        })
    }
}

/// A stored notification as the API shows it.
pub fn notification_message(row: repo::NotificationRow) -> pb::Notification {
    let kind = Kind::parse(&row.kind).map_or(pb::NotificationKind::Unspecified, Kind::to_proto);
    pb::Notification {
        id: row.id.to_string(),
        kind: kind.into(),
        title: row.title,
        body: row.body,
        actor_username: row.actor_username,
        article_slug: row.article_slug,
        read: row.read_at.is_some(),
        created_at: Some(to_proto(row.created_at)),
    }
}

/// The kinds a preferences update names, each at most once: one setting
/// per kind is all there is, so a longer list is a mistake (or an attempt
/// to make the transaction do unbounded work).
fn preference_changes(
    kinds: &[pb::KindPreference],
) -> Result<Vec<(Kind, bool, bool)>, NotificationError> {
    if kinds.len() > Kind::ALL.len() {
        return Err(NotificationError::Invalid(
            "kinds",
            format!("too many (maximum is {})", Kind::ALL.len()),
        ));
    }
    let mut changes: Vec<(Kind, bool, bool)> = Vec::with_capacity(kinds.len());
    for k in kinds {
        let kind = Kind::from_proto(k.kind())
            .ok_or_else(|| NotificationError::Invalid("kinds", "has an unknown kind".into()))?;
        if changes.iter().any(|(seen, _, _)| *seen == kind) {
            return Err(NotificationError::Invalid(
                "kinds",
                format!("names {} more than once", kind.as_str()),
            ));
        }
        changes.push((kind, k.in_app, k.email));
    }
    Ok(changes)
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Reply<pb::ListNotificationsResponse> {
        let user = authn::caller(&request)?.user;
        let r = request.into_inner();
        let limit = match r.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        // The page and its total come from one snapshot: two plain reads let
        // a notification committed in between make them disagree (an empty
        // page with a total of 1).
        let mut snapshot = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(NotificationError::from)?;
        let rows = repo::list(
            &mut *snapshot,
            user,
            r.unread_only,
            i64::from(limit),
            i64::from(r.offset),
        )
        .await
        .map_err(NotificationError::from)?;
        let total = repo::count(&mut *snapshot, user, r.unread_only)
            .await
            .map_err(NotificationError::from)?;
        snapshot.commit().await.map_err(NotificationError::from)?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(notification_message).collect(),
            total: total.unsigned_abs(),
        }))
    }

    async fn unread_count(
        &self,
        request: Request<pb::UnreadCountRequest>,
    ) -> Reply<pb::UnreadCountResponse> {
        let user = authn::caller(&request)?.user;
        let count = repo::count(&self.pool, user, true)
            .await
            .map_err(NotificationError::from)?;
        Ok(Response::new(pb::UnreadCountResponse {
            count: count.unsigned_abs(),
        }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Reply<pb::MarkReadResponse> {
        let user = authn::caller(&request)?.user;
        // Someone else's notification and no notification look the same.
        let id = Uuid::parse_str(request.get_ref().id.trim())
            .map_err(|_| NotificationError::NotFound("notification"))?;
        if !repo::mark_read(&self.pool, user, id)
            .await
            .map_err(NotificationError::from)?
        {
            return Err(NotificationError::NotFound("notification").into());
        }
        Ok(Response::new(pb::MarkReadResponse {}))
    }

    async fn mark_all_read(
        &self,
        request: Request<pb::MarkAllReadRequest>,
    ) -> Reply<pb::MarkAllReadResponse> {
        let user = authn::caller(&request)?.user;
        let marked = repo::mark_all_read(&self.pool, user)
            .await
            .map_err(NotificationError::from)?;
        Ok(Response::new(pb::MarkAllReadResponse { marked }))
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Reply<pb::Preferences> {
        let user = authn::caller(&request)?.user;
        Ok(Response::new(self.preferences(user).await?))
    }

    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> Reply<pb::Preferences> {
        let user = authn::caller(&request)?.user;
        let r = request.into_inner();
        let kinds = preference_changes(&r.kinds)?;
        let mut tx = self.pool.begin().await.map_err(NotificationError::from)?;
        if let Some(enabled) = r.email_enabled {
            repo::set_email_enabled(&mut tx, user, enabled)
                .await
                .map_err(NotificationError::from)?;
        }
        for (kind, in_app, email) in kinds {
            repo::set_kind_preference(&mut tx, user, kind, in_app, email)
                .await
                .map_err(NotificationError::from)?;
        }
        tx.commit().await.map_err(NotificationError::from)?;
        Ok(Response::new(self.preferences(user).await?))
    }

    type SubscribeStream =
        Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send + 'static>>;

    /// Registered before the response goes out, so anything committed after
    /// the client sees the response headers reaches it. The stream ends
    /// when the client goes away (tonic drops it, which unregisters it).
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Reply<Self::SubscribeStream> {
        let caller = authn::caller(&request)?;
        // The stream ends with the session: at the token's expiry, or when
        // a re-check finds it revoked (logout, ban, password change).
        let authn = self.authn.clone();
        let recheck = self.stream_recheck;
        let ended = async move { authn.session_ended(&caller, recheck).await };
        let stream = self.hub.subscribe(caller.user)?.take_until(ended).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}
