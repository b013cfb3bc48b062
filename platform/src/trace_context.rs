//! W3C trace-context propagation between processes: HTTP headers and gRPC
//! metadata (both an `http::HeaderMap`) and `traceparent`/`tracestate`
//! strings (the event envelope's fields and AMQP headers, see `quill-events`).
//!
//! Everything goes through the global propagator that
//! [`telemetry::init`](crate::telemetry::init) installs (W3C TraceContext).
//! Without it, or with the span disabled by the filter, injection writes
//! nothing and extraction yields an empty context: a new trace starts.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
    trace::TraceContextExt,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header carrying trace id, parent span id and flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Two plain strings (the envelope fields, AMQP header values).
struct Pair<'a> {
    traceparent: &'a str,
    tracestate: &'a str,
}

impl Extractor for Pair<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent).filter(|v| !v.is_empty()),
            TRACESTATE => Some(self.tracestate).filter(|v| !v.is_empty()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[derive(Default)]
struct PairInjector {
    traceparent: String,
    tracestate: String,
}

impl Injector for PairInjector {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            TRACESTATE => self.tracestate = value,
            _ => {}
        }
    }
}

fn inject(cx: &Context, injector: &mut dyn Injector) {
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, injector));
    }
}

fn extract(extractor: &dyn Extractor) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(extractor))
}

/// Writes `span`'s context as `traceparent`/`tracestate` headers.
pub fn inject_headers(span: &tracing::Span, headers: &mut HeaderMap) {
    inject(&span.context(), &mut HeaderInjector(headers));
}

/// The remote parent carried by `traceparent`/`tracestate` headers (empty
/// context when absent or malformed).
pub fn extract_headers(headers: &HeaderMap) -> Context {
    extract(&HeaderExtractor(headers))
}

/// Makes the remote context in `headers`, if any, the parent of `span`.
/// Must run before the span is first entered.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &HeaderMap) {
    let cx = extract_headers(headers);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// `span`'s context as `(traceparent, tracestate)`; empty strings when the
/// span is not traced.
pub fn to_strings(span: &tracing::Span) -> (String, String) {
    let mut out = PairInjector::default();
    inject(&span.context(), &mut out);
    (out.traceparent, out.tracestate)
}

/// The context described by a `traceparent`/`tracestate` pair.
pub fn from_strings(traceparent: &str, tracestate: &str) -> Context {
    extract(&Pair {
        traceparent,
        tracestate,
    })
}

/// Hex trace id and span id of `span`, when it is traced.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
