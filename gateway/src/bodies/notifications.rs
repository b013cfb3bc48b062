//! Notifications (a Quill extension): the list, its counts, delivery
//! preferences, and the events of the live stream.

use quill_proto::notification::v1::{self as pb, NotificationKind};
use serde::Serialize;

use super::timestamp;

/// The REST name of each kind, in both directions (preferences name them).
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

pub fn kind_from_name(name: &str) -> Option<NotificationKind> {
    KINDS.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

/// One notification, in a list and as a stream event's data.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    actor_username: Option<String>,
    article_slug: Option<String>,
    body: String,
    created_at: String,
    id: String,
    kind: &'static str,
    read: bool,
    title: String,
}

impl From<pb::Notification> for Notification {
    fn from(n: pb::Notification) -> Self {
        Self {
            kind: kind_name(n.kind()),
            actor_username: n.actor_username,
            article_slug: n.article_slug,
            body: n.body,
            created_at: timestamp(n.created_at.as_ref()),
            id: n.id,
            read: n.read,
            title: n.title,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsBody {
    notifications: Vec<Notification>,
    notifications_count: u64,
}

impl From<pb::ListNotificationsResponse> for NotificationsBody {
    fn from(page: pb::ListNotificationsResponse) -> Self {
        Self {
            notifications: page
                .notifications
                .into_iter()
                .map(Notification::from)
                .collect(),
            notifications_count: page.total,
        }
    }
}

/// `{"count": n}`: unread notifications.
#[derive(Serialize)]
pub struct UnreadCountBody {
    count: u64,
}

impl From<pb::UnreadCountResponse> for UnreadCountBody {
    fn from(response: pb::UnreadCountResponse) -> Self {
        Self {
            count: response.count,
        }
    }
}

/// `{"marked": n}`: notifications newly marked read.
#[derive(Serialize)]
pub struct MarkedBody {
    marked: u64,
}

impl From<pb::MarkAllReadResponse> for MarkedBody {
    fn from(response: pb::MarkAllReadResponse) -> Self {
        Self {
            marked: response.marked,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindPreference {
    email: bool,
    in_app: bool,
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    email_enabled: bool,
    kinds: Vec<KindPreference>,
}

/// `{"preferences": ...}`
#[derive(Serialize)]
pub struct PreferencesBody {
    preferences: Preferences,
}

impl From<pb::Preferences> for PreferencesBody {
    fn from(p: pb::Preferences) -> Self {
        let kinds = p
            .kinds
            .iter()
            .map(|k| KindPreference {
                email: k.email,
                in_app: k.in_app,
                kind: kind_name(k.kind()),
            })
            .collect();
        Self {
            preferences: Preferences {
                email_enabled: p.email_enabled,
                kinds,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bodies::testing::{assert_sent_as, at};

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
        let comment = pb::Notification {
            id: "0190a5c4-8a52-7b3e-9c1d-2f4e6a8b0c11".into(),
            kind: NotificationKind::Comment.into(),
            title: "jake commented".into(),
            body: "Nice".into(),
            actor_username: Some("jake".into()),
            article_slug: None,
            read: false,
            created_at: at(1_767_323_045, 678_000_000),
        };
        let comment_json = json!({
            "id": "0190a5c4-8a52-7b3e-9c1d-2f4e6a8b0c11",
            "kind": "comment",
            "title": "jake commented",
            "body": "Nice",
            "actorUsername": "jake",
            "articleSlug": null,
            "read": false,
            "createdAt": "2026-01-02T03:04:05.678Z",
        });
        assert_sent_as(&Notification::from(comment.clone()), &comment_json);
        let page = NotificationsBody::from(pb::ListNotificationsResponse {
            notifications: vec![comment],
            total: 7,
        });
        assert_sent_as(
            &page,
            &json!({ "notifications": [comment_json], "notificationsCount": 7 }),
        );
    }

    #[test]
    fn counts_are_numbers() {
        assert_sent_as(
            &UnreadCountBody::from(pb::UnreadCountResponse { count: 3 }),
            &json!({ "count": 3 }),
        );
        assert_sent_as(
            &MarkedBody::from(pb::MarkAllReadResponse { marked: 2 }),
            &json!({ "marked": 2 }),
        );
    }

    #[test]
    fn preferences_name_their_kinds() {
        let body = PreferencesBody::from(pb::Preferences {
            email_enabled: true,
            kinds: vec![pb::KindPreference {
                kind: NotificationKind::NewFollower.into(),
                in_app: true,
                email: false,
            }],
        });
        assert_sent_as(
            &body,
            &json!({ "preferences": {
                "emailEnabled": true,
                "kinds": [{ "kind": "new_follower", "inApp": true, "email": false }],
            }}),
        );
    }
}
