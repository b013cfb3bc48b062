//! What an event message looks like on the wire: one prost-encoded
//! `Envelope`, or several of one type in an `EnvelopeBatch`, told apart by
//! the content type.

use lapin::{BasicProperties, types::FieldTable};
use prost::Message;
use quill_proto::events::v1::{Envelope, EnvelopeBatch};

use quill_platform::trace_context;

use crate::broker;

/// Content type of a message carrying one prost-encoded `Envelope`.
pub const CONTENT_TYPE: &str = "application/protobuf";
/// Content type of a message carrying a prost-encoded `EnvelopeBatch`.
pub const BATCH_CONTENT_TYPE: &str = "application/protobuf; proto=quill.events.v1.EnvelopeBatch";
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// The events of one message.
#[derive(Debug)]
pub enum Events {
    One(Box<Envelope>),
    Batch(Vec<Envelope>),
}

/// The events a message with these properties carries, by its content type.
pub fn decode(properties: &BasicProperties, data: &[u8]) -> Result<Events, prost::DecodeError> {
    if is_batch(properties) {
        Ok(Events::Batch(EnvelopeBatch::decode(data)?.envelopes))
    } else {
        Envelope::decode(data).map(|envelope| Events::One(Box::new(envelope)))
    }
}

/// Whether a message with these properties carries an `EnvelopeBatch`.
pub fn is_batch(properties: &BasicProperties) -> bool {
    properties
        .content_type()
        .as_ref()
        .is_some_and(|t| t.as_str() == BATCH_CONTENT_TYPE)
}

/// Properties of a message carrying the event `id` alone. The trace context
/// travels as headers too, so a consumer's span joins the producer's trace
/// before it decodes anything.
pub(crate) fn single(
    id: &str,
    routing_key: &str,
    producer: &str,
    (traceparent, tracestate): (&str, &str),
) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in [
        (trace_context::TRACEPARENT, traceparent),
        (trace_context::TRACESTATE, tracestate),
    ] {
        if !value.is_empty() {
            headers.insert(name.into(), broker::string_value(value));
        }
    }
    let properties = common(id, routing_key, producer).with_content_type(CONTENT_TYPE.into());
    if headers.inner().is_empty() {
        properties
    } else {
        properties.with_headers(headers)
    }
}

/// Properties of a batch message `id` of `routing_key` events. No trace
/// headers: each envelope carries its own context.
pub(crate) fn batch(id: &str, routing_key: &str, producer: &str) -> BasicProperties {
    common(id, routing_key, producer).with_content_type(BATCH_CONTENT_TYPE.into())
}

fn common(id: &str, routing_key: &str, producer: &str) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(id.into())
        .with_type(routing_key.into());
    if producer.is_empty() {
        properties
    } else {
        properties.with_app_id(producer.into())
    }
}
