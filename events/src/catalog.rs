//! Who consumes which events: every consuming service's queue and the
//! routing keys it binds, in one place. Consumers take their topology from
//! here, and every relay declares all of them when it connects, so an event
//! published before its consumer first started waits in the queue instead of
//! being dropped by the exchange (a topic exchange discards what no binding
//! routes).
//!
//! In production each queue is named after its service (`content`). A
//! queue prefix (`<prefix>.content`) lets several isolated event systems
//! share one vhost, a test run's next to another's, each with its own
//! exchange too.

use crate::{EventsConfig, Topology};

/// The content service's queue: it keeps a read-model of users.
pub const CONTENT: &str = "content";
/// What content binds.
pub const CONTENT_KEYS: &[&str] = &["user.registered", "user.updated", "user.banned"];

/// The notification service's queue.
pub const NOTIFICATION: &str = "notification";
/// What notification binds.
pub const NOTIFICATION_KEYS: &[&str] = &[
    "user.registered",
    "user.updated",
    "user.followed",
    "comment.added",
    "article.favorited",
    "article.published",
];

/// Every consuming service and the routing keys its queue binds.
pub const SUBSCRIPTIONS: &[(&str, &[&str])] =
    &[(CONTENT, CONTENT_KEYS), (NOTIFICATION, NOTIFICATION_KEYS)];

/// The version of the queues' shape, in their names: `v2` are quorum
/// queues, which an older broker's classic `<service>` queues cannot turn
/// into in place (see `broker`).
const QUEUE_VERSION: &str = "v2";

/// The queue of `service`: `<service>.v2`, under `queue_prefix` unless
/// that is empty.
pub fn queue_name(queue_prefix: &str, service: &str) -> String {
    format!(
        "{}.{QUEUE_VERSION}",
        legacy_queue_name(queue_prefix, service)
    )
}

/// The classic queue an older Quill declared for `service`.
pub fn legacy_queue_name(queue_prefix: &str, service: &str) -> String {
    if queue_prefix.is_empty() {
        service.to_owned()
    } else {
        format!("{queue_prefix}.{service}")
    }
}

fn topology_of(
    config: &EventsConfig,
    queue_prefix: &str,
    service: &str,
    bindings: &[&str],
) -> Topology {
    Topology {
        legacy_queue: Some(legacy_queue_name(queue_prefix, service)),
        ..config.topology(&queue_name(queue_prefix, service), bindings)
    }
}

/// The topology of `service`, or `None` if it consumes nothing.
pub fn topology(config: &EventsConfig, queue_prefix: &str, service: &str) -> Option<Topology> {
    SUBSCRIPTIONS
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(name, bindings)| topology_of(config, queue_prefix, name, bindings))
}

/// The content service's topology.
pub fn content(config: &EventsConfig, queue_prefix: &str) -> Topology {
    topology_of(config, queue_prefix, CONTENT, CONTENT_KEYS)
}

/// The notification service's topology.
pub fn notification(config: &EventsConfig, queue_prefix: &str) -> Topology {
    topology_of(config, queue_prefix, NOTIFICATION, NOTIFICATION_KEYS)
}

/// Every consuming service's topology, for relays to declare.
pub fn all(config: &EventsConfig, queue_prefix: &str) -> Vec<Topology> {
    SUBSCRIPTIONS
        .iter()
        .map(|(name, bindings)| topology_of(config, queue_prefix, name, bindings))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_named_after_their_service_under_an_optional_prefix() {
        let config = EventsConfig {
            exchange: "x.events".into(),
            ..EventsConfig::default()
        };
        let content = content(&config, "");
        assert_eq!(content.exchange, "x.events");
        assert_eq!(content.queue, "content.v2");
        assert_eq!(content.legacy_queue.as_deref(), Some("content"));
        assert_eq!(
            content.bindings,
            ["user.registered", "user.updated", "user.banned"]
        );
        assert_eq!(notification(&config, "t1").queue, "t1.notification.v2");
        assert_eq!(
            topology(&config, "t1", NOTIFICATION),
            Some(notification(&config, "t1"))
        );
        assert_eq!(all(&config, "").len(), SUBSCRIPTIONS.len());
        assert!(topology(&config, "", "nobody").is_none());
    }

    #[test]
    fn every_binding_is_a_routing_key_some_payload_has() {
        use quill_proto::events::v1::{self as pb, envelope::Payload};
        let keys: Vec<&str> = [
            Payload::UserRegistered(pb::UserRegistered::default()),
            Payload::UserUpdated(pb::UserUpdated::default()),
            Payload::UserBanned(pb::UserBanned::default()),
            Payload::ArticlePublished(pb::ArticlePublished::default()),
            Payload::ArticleUpdated(pb::ArticleUpdated::default()),
            Payload::ArticleDeleted(pb::ArticleDeleted::default()),
            Payload::CommentAdded(pb::CommentAdded::default()),
            Payload::ArticleFavorited(pb::ArticleFavorited::default()),
            Payload::UserFollowed(pb::UserFollowed::default()),
        ]
        .iter()
        .map(crate::routing_key)
        .collect();
        for (service, bindings) in SUBSCRIPTIONS {
            for binding in *bindings {
                assert!(keys.contains(binding), "{service} binds unknown {binding}");
            }
        }
    }
}
