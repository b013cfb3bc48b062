//! Building event envelopes. The routing key is derived from the payload
//! variant, so a producer cannot publish a payload under the wrong type.

use chrono::Utc;
use quill_proto::events::v1::{Envelope, envelope::Payload};
use uuid::Uuid;

use quill_platform::time;

/// The AMQP routing key (the envelope `type`) of a payload.
pub fn routing_key(payload: &Payload) -> &'static str {
    match payload {
        Payload::UserRegistered(_) => "user.registered",
        Payload::UserUpdated(_) => "user.updated",
        Payload::UserBanned(_) => "user.banned",
        Payload::ArticlePublished(_) => "article.published",
        Payload::ArticleUpdated(_) => "article.updated",
        Payload::ArticleDeleted(_) => "article.deleted",
        Payload::CommentAdded(_) => "comment.added",
        Payload::ArticleFavorited(_) => "article.favorited",
        Payload::UserFollowed(_) => "user.followed",
    }
}

/// Wraps `payload` in a new envelope from `producer` (e.g. `"auth"`),
/// raised by the request or event being handled now.
pub fn new_envelope(producer: &str, payload: Payload) -> Envelope {
    EventOrigin::current().envelope(producer, payload)
}

/// What an event carries of the change that raised it: the W3C
/// `traceparent` and `tracestate` of its span (empty strings when untraced)
/// and its request id. The outbox keeps them, so the consumer continues the
/// original request's trace however late the relay publishes. Captured
/// apart from the envelope for a change written by another task (a batch
/// writer), where neither the span nor the request id is current.
#[derive(Debug, Clone)]
pub struct EventOrigin {
    traceparent: String,
    tracestate: String,
    request_id: String,
}

impl EventOrigin {
    /// The origin of an event raised now, in this task and span.
    pub fn current() -> Self {
        let (traceparent, tracestate) =
            quill_platform::trace_context::to_strings(&tracing::Span::current());
        Self {
            traceparent,
            tracestate,
            request_id: quill_platform::request_id::current().unwrap_or_default(),
        }
    }

    /// Wraps `payload` in a new envelope from `producer` raised here.
    ///
    /// The id is a UUIDv7: unique for deduplication and roughly time
    /// ordered, so the outbox index on it stays append-mostly.
    pub fn envelope(self, producer: &str, payload: Payload) -> Envelope {
        Envelope {
            event_id: Uuid::now_v7().to_string(),
            r#type: routing_key(&payload).to_owned(),
            occurred_at: Some(time::to_proto(Utc::now())),
            producer: producer.to_owned(),
            traceparent: self.traceparent,
            tracestate: self.tracestate,
            request_id: self.request_id,
            payload: Some(payload),
        }
    }
}
