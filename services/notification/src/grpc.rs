//! The gRPC face of notification: take the caller the authentication layer
//! established, translate messages, and delegate to `Inbox`.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt};
use quill_platform::{
    authn::{self, Authenticator},
    time::to_proto,
};
use quill_proto::notification::v1::{self as pb, notification_service_server::NotificationService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    error::NotificationError,
    inbox::{Inbox, ListQuery, Notification},
    live::Hub,
    preferences::{KindChange, Preferences, PreferencesUpdate},
    rules::Kind,
    watching::Watching,
};

/// Missed notifications are read and sent this many at a time.
const REPLAY_PAGE: u32 = 200;

pub struct NotificationGrpc {
    inbox: Inbox,
    hub: Hub,
    watching: Watching,
    /// Re-checks the sessions of live streams.
    authn: Authenticator,
    stream_recheck: Duration,
}

impl NotificationGrpc {
    pub fn new(
        inbox: Inbox,
        hub: Hub,
        watching: Watching,
        authn: Authenticator,
        stream_recheck: Duration,
    ) -> Self {
        Self {
            inbox,
            hub,
            watching,
            authn,
            stream_recheck,
        }
    }
}

/// A notification as the API shows it.
fn notification_message(notification: Notification) -> pb::Notification {
    let kind = notification
        .kind
        .map_or(pb::NotificationKind::Unspecified, Kind::to_proto);
    pb::Notification {
        id: notification.id.to_string(),
        kind: kind.into(),
        title: notification.title,
        body: notification.body,
        actor_username: notification.actor_username,
        article_slug: notification.article_slug,
        read: notification.read,
        created_at: Some(to_proto(notification.created_at)),
    }
}

fn preferences_message(preferences: Preferences) -> pb::Preferences {
    pb::Preferences {
        email_enabled: preferences.email_enabled,
        kinds: preferences
            .kinds
            .into_iter()
            .map(|k| pb::KindPreference {
                kind: k.kind.to_proto().into(),
                in_app: k.in_app,
                email: k.email,
            })
            .collect(),
    }
}

fn preferences_update(request: pb::UpdatePreferencesRequest) -> PreferencesUpdate {
    PreferencesUpdate {
        email_enabled: request.email_enabled,
        kinds: request
            .kinds
            .iter()
            .map(|k| KindChange {
                kind: Kind::from_proto(k.kind()),
                in_app: k.in_app,
                email: k.email,
            })
            .collect(),
    }
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
        let query = ListQuery {
            unread_only: r.unread_only,
            limit: r.limit,
            offset: r.offset,
        };
        let page = self.inbox.list(user, query).await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: page
                .notifications
                .into_iter()
                .map(notification_message)
                .collect(),
            total: page.total,
        }))
    }

    async fn unread_count(
        &self,
        request: Request<pb::UnreadCountRequest>,
    ) -> Reply<pb::UnreadCountResponse> {
        let user = authn::caller(&request)?.user;
        let count = self.inbox.unread_count(user).await?;
        Ok(Response::new(pb::UnreadCountResponse { count }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Reply<pb::MarkReadResponse> {
        let user = authn::caller(&request)?.user;
        self.inbox.mark_read(user, &request.get_ref().id).await?;
        Ok(Response::new(pb::MarkReadResponse {}))
    }

    async fn mark_all_read(
        &self,
        request: Request<pb::MarkAllReadRequest>,
    ) -> Reply<pb::MarkAllReadResponse> {
        let user = authn::caller(&request)?.user;
        let marked = self.inbox.mark_all_read(user).await?;
        Ok(Response::new(pb::MarkAllReadResponse { marked }))
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Reply<pb::Preferences> {
        let user = authn::caller(&request)?.user;
        let preferences = self.inbox.preferences(user).await?;
        Ok(Response::new(preferences_message(preferences)))
    }

    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> Reply<pb::Preferences> {
        let user = authn::caller(&request)?.user;
        let update = preferences_update(request.into_inner());
        let preferences = self.inbox.update_preferences(user, update).await?;
        Ok(Response::new(preferences_message(preferences)))
    }

    type SubscribeStream =
        Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send + 'static>>;

    /// Registered before the response goes out, so anything committed after
    /// the client sees the response headers reaches it. The stream ends
    /// when the client goes away (tonic drops it, which unregisters it).
    ///
    /// A stream sends its user's notifications after one position, in
    /// their order (`seq`, commit order), each once: after `after_id` when
    /// resuming, otherwise after the latest one. That position goes out in
    /// the response metadata, so a stream that ends before its first
    /// notification can still be resumed. The live subscription is taken
    /// before the position and the missed ones are read, so nothing falls
    /// between them; a live one already sent, or at or before the
    /// position, is skipped. Live ones come in commit order too (NOTIFY
    /// delivers in commit order), so skipping by seq loses none. The
    /// user's lease is taken between the two: what is not announced is
    /// committed before the position is read.
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Reply<Self::SubscribeStream> {
        let caller = authn::caller(&request)?;
        let after = request
            .into_inner()
            .after_id
            .map(|id| {
                Uuid::parse_str(id.trim())
                    .map_err(|_| NotificationError::invalid("after_id", "is not a notification id"))
            })
            .transpose()?;
        let live = self.hub.subscribe(caller.user)?;
        let user = caller.user;
        self.watching.start(user).await?;
        let start = self.inbox.stream_start(user, after).await?;
        live.starts_after(start.seq);
        let missed = match after {
            Some(_) => self.inbox.missed(user, start.seq, REPLAY_PAGE).await?,
            // Nothing is after the latest one yet; what comes is live.
            None => Vec::new(),
        };
        // The stream ends with the session: at the token's expiry, or when
        // a re-check finds it revoked (logout, ban, password change).
        let authn = self.authn.clone();
        let recheck = self.stream_recheck;
        let ended = async move { authn.session_ended(&caller, recheck).await };
        let inbox = self.inbox.clone();
        let stream = async_stream::stream! {
            let mut last_sent = start.seq;
            let mut page = missed;
            loop {
                let more = page.len() == REPLAY_PAGE as usize;
                for notification in page {
                    last_sent = notification.seq;
                    yield Ok(notification_message(notification));
                }
                if !more {
                    break;
                }
                page = match inbox.missed(user, last_sent, REPLAY_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        yield Err(Status::from(e));
                        return;
                    }
                };
            }
            let mut live = live;
            while let Some(notification) = live.next().await {
                if notification.seq > last_sent {
                    last_sent = notification.seq;
                    yield Ok(notification_message(notification));
                }
            }
        }
        .take_until(ended);
        let mut response = Response::new(Box::pin(stream) as Self::SubscribeStream);
        // A UUID's text is always a valid metadata value.
        if let Ok(position) = start.id.to_string().parse() {
            response
                .metadata_mut()
                .insert(pb::STREAM_POSITION, position);
        }
        Ok(response)
    }
}
