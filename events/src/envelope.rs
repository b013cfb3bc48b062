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

/// Wraps `payload` in a new envelope from `producer` (e.g. `"auth"`).
///
/// The id is a UUIDv7: unique for deduplication and roughly time ordered, so
/// the outbox index on it stays append-mostly.
pub fn new_envelope(producer: &str, payload: Payload) -> Envelope {
    let (traceparent, tracestate) = current_trace_context();
    Envelope {
        event_id: Uuid::now_v7().to_string(),
        r#type: routing_key(&payload).to_owned(),
        occurred_at: Some(time::to_proto(Utc::now())),
        producer: producer.to_owned(),
        traceparent,
        tracestate,
        request_id: quill_platform::request_id::current().unwrap_or_default(),
        payload: Some(payload),
    }
}

/// The W3C `traceparent` and `tracestate` of the change that raises the
/// event, read from the current span (empty strings when untraced). The
/// outbox keeps them, so the consumer continues the original request's trace
/// however late the relay publishes.
fn current_trace_context() -> (String, String) {
    quill_platform::trace_context::to_strings(&tracing::Span::current())
}
