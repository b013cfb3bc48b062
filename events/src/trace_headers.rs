//! The trace context an AMQP message carries in its headers.

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::{Context, trace::TraceContextExt};
use quill_platform::trace_context::{self, TRACEPARENT, TRACESTATE};

/// The context carried by an AMQP message's `traceparent`/`tracestate`
/// headers, if it has a valid one.
pub(crate) fn from_amqp_headers(headers: Option<&FieldTable>) -> Option<Context> {
    let headers = headers?.inner();
    let text = |name: &str| match headers.get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    };
    let cx = trace_context::from_strings(&text(TRACEPARENT), &text(TRACESTATE));
    cx.span().span_context().is_valid().then_some(cx)
}
