//! Notifications (a Quill extension): the caller's list, unread count, read
//! marks, delivery preferences, and a live Server-Sent Events stream fed by
//! the notification service's `Subscribe` RPC.

use std::{convert::Infallible, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{
        IntoResponse,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures::{Stream, StreamExt};
use quill_platform::authn::Caller;
use quill_proto::notification::v1::{self as pb, NotificationKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::ApiError,
    extract::{ApiJson, ApiQuery, AuthUser},
    json::timestamp,
    rpc::Rpc,
    state::AppState,
};

/// Comment lines that keep idle proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/notifications", get(list))
        .route("/api/notifications/unread-count", get(unread_count))
        .route("/api/notifications/{id}/read", post(mark_read))
        .route("/api/notifications/read-all", post(mark_all_read))
        .route(
            "/api/notifications/preferences",
            get(get_preferences).put(update_preferences),
        )
        .route("/api/notifications/stream", get(stream))
}

const KINDS: [(NotificationKind, &str); 5] = [
    (NotificationKind::Welcome, "welcome"),
    (NotificationKind::NewFollower, "new_follower"),
    (NotificationKind::Comment, "comment"),
    (NotificationKind::Favorite, "favorite"),
    (NotificationKind::NewArticle, "new_article"),
];

fn kind_name(kind: NotificationKind) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("unknown", |(_, name)| name)
}

fn kind_from_name(name: &str) -> Option<NotificationKind> {
    KINDS.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

fn notification(n: pb::Notification) -> Value {
    json!({
        "id": n.id,
        "kind": kind_name(n.kind()),
        "title": n.title,
        "body": n.body,
        "actorUsername": n.actor_username,
        "articleSlug": n.article_slug,
        "read": n.read,
        "createdAt": timestamp(n.created_at.as_ref()),
    })
}

fn preferences(p: pb::Preferences) -> Json<Value> {
    let kinds: Vec<Value> = p
        .kinds
        .iter()
        .map(|k| json!({ "kind": kind_name(k.kind()), "inApp": k.in_app, "email": k.email }))
        .collect();
    Json(json!({ "preferences": { "emailEnabled": p.email_enabled, "kinds": kinds } }))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<u32>,
    offset: Option<u32>,
    unread: Option<bool>,
}

async fn list(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    if params.limit == Some(0) {
        return Err(ApiError::validation("limit", "must be at least 1"));
    }
    let request = pb::ListNotificationsRequest {
        limit: params.limit.unwrap_or(0),
        offset: params.offset.unwrap_or(0),
        unread_only: params.unread.unwrap_or(false),
    };
    let page = state
        .upstreams
        .notification()
        .list_notifications(rpc.authed(request, &user))
        .await?
        .into_inner();
    let notifications: Vec<Value> = page.notifications.into_iter().map(notification).collect();
    Ok(Json(json!({
        "notifications": notifications,
        "notificationsCount": page.total,
    })))
}

async fn unread_count(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let count = state
        .upstreams
        .notification()
        .unread_count(rpc.authed(pb::UnreadCountRequest {}, &user))
        .await?
        .into_inner()
        .count;
    Ok(Json(json!({ "count": count })))
}

async fn mark_read(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state
        .upstreams
        .notification()
        .mark_read(rpc.authed(pb::MarkReadRequest { id }, &user))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mark_all_read(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let marked = state
        .upstreams
        .notification()
        .mark_all_read(rpc.authed(pb::MarkAllReadRequest {}, &user))
        .await?
        .into_inner()
        .marked;
    Ok(Json(json!({ "marked": marked })))
}

async fn get_preferences(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let found = state
        .upstreams
        .notification()
        .get_preferences(rpc.authed(pb::GetPreferencesRequest {}, &user))
        .await?
        .into_inner();
    Ok(preferences(found))
}

#[derive(Debug, Deserialize)]
struct PreferencesBody {
    preferences: PreferencesUpdate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PreferencesUpdate {
    email_enabled: Option<bool>,
    #[serde(default)]
    kinds: Vec<KindUpdate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KindUpdate {
    kind: String,
    in_app: bool,
    email: bool,
}

async fn update_preferences(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    ApiJson(body): ApiJson<PreferencesBody>,
) -> Result<impl IntoResponse, ApiError> {
    let kinds = body
        .preferences
        .kinds
        .into_iter()
        .map(|k| {
            let kind = kind_from_name(&k.kind).ok_or_else(|| {
                ApiError::validation("kinds", format!("unknown kind {:?}", k.kind))
            })?;
            Ok(pb::KindPreference {
                kind: kind.into(),
                in_app: k.in_app,
                email: k.email,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let request = pb::UpdatePreferencesRequest {
        email_enabled: body.preferences.email_enabled,
        kinds,
    };
    let updated = state
        .upstreams
        .notification()
        .update_preferences(rpc.authed(request, &user))
        .await?
        .into_inner();
    Ok(preferences(updated))
}

/// The caller's new notifications as Server-Sent Events, until either side
/// goes away, the access token expires, its session is revoked, or the
/// gateway shuts down; then the stream simply ends and the client reconnects
/// (with a fresh token). The subscription is in place before the response
/// starts.
async fn stream(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut request = rpc.authed(pb::SubscribeRequest {}, &user);
    // The stream is meant to outlive any per-call deadline: drop the
    // `grpc-timeout` the shared builder sets, or it would end after it.
    request.metadata_mut().remove("grpc-timeout");
    let notifications = state
        .upstreams
        .notification()
        .subscribe(request)
        .await?
        .into_inner();
    let end = Box::pin(stream_end(state, user.caller));
    let events = futures::stream::unfold(Some((notifications, end)), |open| async move {
        let (mut notifications, mut end) = open?;
        tokio::select! {
            // An ended session gets nothing more, even if notifications
            // are waiting.
            biased;
            reason = &mut end => {
                tracing::info!(reason = reason.as_str(), "notification stream closed");
                None
            }
            item = notifications.next() => match item {
                Some(Ok(n)) => Some((Ok(event(n)), Some((notifications, end)))),
                Some(Err(status)) => {
                    tracing::info!(code = ?status.code(), "notification stream ended");
                    None
                }
                None => None,
            },
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn event(n: pb::Notification) -> Event {
    let id = n.id.clone();
    Event::default().id(id).data(notification(n).to_string())
}

/// Why the gateway closed a notification stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// The token expired or the session ended (logout, ban, password
    /// change), or its state could not be learned.
    SessionEnded,
    Shutdown,
}

impl StreamEnd {
    fn as_str(self) -> &'static str {
        match self {
            Self::SessionEnded => "session ended",
            Self::Shutdown => "shutting down",
        }
    }
}

/// Resolves when a stream for `caller` must end: when its session does
/// (the notification service ends its side too; this covers the gateway's
/// own hold on the client) or at shutdown.
async fn stream_end(state: AppState, caller: Caller) -> StreamEnd {
    tokio::select! {
        () = state.shutdown.cancelled() => StreamEnd::Shutdown,
        () = state.authn.session_ended(&caller, state.config.stream_recheck) => StreamEnd::SessionEnded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_rest_names_both_ways() {
        for (kind, name) in KINDS {
            assert_eq!(kind_name(kind), name);
            assert_eq!(kind_from_name(name), Some(kind));
        }
        assert_eq!(kind_from_name("WELCOME"), None);
    }

    #[test]
    fn a_notification_has_the_documented_fields() {
        let value = notification(pb::Notification {
            id: "0190a5c4-8a52-7b3e-9c1d-2f4e6a8b0c11".into(),
            kind: NotificationKind::Comment.into(),
            title: "jake commented".into(),
            body: "Nice".into(),
            actor_username: Some("jake".into()),
            article_slug: None,
            read: false,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_767_323_045,
                nanos: 678_000_000,
            }),
        });
        assert_eq!(
            value,
            json!({
                "id": "0190a5c4-8a52-7b3e-9c1d-2f4e6a8b0c11",
                "kind": "comment",
                "title": "jake commented",
                "body": "Nice",
                "actorUsername": "jake",
                "articleSlug": null,
                "read": false,
                "createdAt": "2026-01-02T03:04:05.678Z",
            })
        );
    }
}
