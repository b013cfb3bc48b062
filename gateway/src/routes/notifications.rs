//! Notifications (a Quill extension): the caller's list, unread count, read
//! marks, delivery preferences, and a live Server-Sent Events stream fed by
//! the notification service's `Subscribe` RPC.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{
        IntoResponse,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt};
use quill_platform::authn::Caller;
use quill_proto::notification::v1 as pb;
use serde::Deserialize;

use crate::{
    bodies::notifications::{
        MarkedBody, Notification, NotificationsBody, PreferencesBody, UnreadCountBody,
        kind_from_name,
    },
    calls::Calls,
    error::ApiError,
    extract::{ApiJson, ApiQuery, AuthUser},
    route_table::{RouteTable, get, post},
    state::AppState,
};

/// Comment lines that keep idle proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> RouteTable {
    RouteTable::default()
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

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<u32>,
    offset: Option<u32>,
    unread: Option<bool>,
}

async fn list(
    calls: Calls,
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
    let page = calls
        .notification(Some(&user))
        .list_notifications(request)
        .await?
        .into_inner();
    Ok(Json(NotificationsBody::from(page)))
}

async fn unread_count(calls: Calls, user: AuthUser) -> Result<impl IntoResponse, ApiError> {
    let count = calls
        .notification(Some(&user))
        .unread_count(pb::UnreadCountRequest {})
        .await?
        .into_inner();
    Ok(Json(UnreadCountBody::from(count)))
}

async fn mark_read(
    calls: Calls,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    calls
        .notification(Some(&user))
        .mark_read(pb::MarkReadRequest { id })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mark_all_read(calls: Calls, user: AuthUser) -> Result<impl IntoResponse, ApiError> {
    let marked = calls
        .notification(Some(&user))
        .mark_all_read(pb::MarkAllReadRequest {})
        .await?
        .into_inner();
    Ok(Json(MarkedBody::from(marked)))
}

async fn get_preferences(calls: Calls, user: AuthUser) -> Result<impl IntoResponse, ApiError> {
    let found = calls
        .notification(Some(&user))
        .get_preferences(pb::GetPreferencesRequest {})
        .await?
        .into_inner();
    Ok(Json(PreferencesBody::from(found)))
}

#[derive(Debug, Deserialize)]
struct PreferencesChange {
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
    calls: Calls,
    user: AuthUser,
    ApiJson(body): ApiJson<PreferencesChange>,
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
    let updated = calls
        .notification(Some(&user))
        .update_preferences(request)
        .await?
        .into_inner();
    Ok(Json(PreferencesBody::from(updated)))
}

/// The caller's new notifications as Server-Sent Events, until either side
/// goes away, the access token expires, its session is revoked, or the
/// gateway shuts down; then the stream simply ends and the client reconnects
/// (with a fresh token). The subscription is in place before the response
/// starts. A reconnecting `EventSource` sends the id of the last event it
/// received as `Last-Event-ID`, and is sent every notification it missed
/// since, in order, before the live ones. The first event carries only the
/// id the stream starts after, so that even a stream ending before its
/// first notification leaves the client an id to resume from.
async fn stream(
    State(state): State<AppState>,
    calls: Calls,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, axum::Error>>>, ApiError> {
    let after_id = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let mut client = calls.notification_stream(&user);
    let subscribed = client
        .subscribe(pb::SubscribeRequest {
            after_id: after_id.clone(),
        })
        .await;
    let subscribed = match subscribed {
        // `EventSource` gives up for good on any answer but 200: an id it
        // cannot resume from (forged, or from another account) streams
        // live from now rather than never again.
        Err(status) if after_id.is_some() && status.code() == tonic::Code::InvalidArgument => {
            tracing::info!(
                reason = status.message(),
                "Last-Event-ID unusable; streaming from now"
            );
            client.subscribe(pb::SubscribeRequest::default()).await?
        }
        subscribed => subscribed?,
    };
    // None from a notification service older than the position.
    let opening = subscribed
        .metadata()
        .get(pb::STREAM_POSITION)
        .and_then(|position| position.to_str().ok())
        .map(position_event);
    let notifications = subscribed.into_inner();
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
                Some(Ok(n)) => Some((event(n), Some((notifications, end)))),
                Some(Err(status)) => {
                    tracing::info!(code = ?status.code(), "notification stream ended");
                    None
                }
                None => None,
            },
        }
    });
    let events = futures::stream::iter(opening.map(Ok)).chain(events);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// An event with an id and no data: `EventSource` takes the id as its
/// `lastEventId` and dispatches nothing (the SSE processing model drops an
/// event without data); the type tells readers that parse the stream
/// themselves what it is. A metadata value is visible ASCII, so it is a
/// valid id.
fn position_event(position: &str) -> Event {
    Event::default().event("position").id(position)
}

/// An error (a notification that would not serialize) ends the stream.
fn event(n: pb::Notification) -> Result<Event, axum::Error> {
    let id = n.id.clone();
    Event::default().id(id).json_data(Notification::from(n))
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
