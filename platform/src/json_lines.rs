//! The JSON log line: one object per event with its timestamp, level,
//! target and fields, the fields of the spans it is in (`span`, the
//! innermost span's value winning, and the innermost span's `name`), and
//! `request_id`, `trace_id`, `span_id` at the top level for correlation.
//!
//! Span fields are kept as values ([`SpanFields`]) and written straight
//! into the line. The fmt layer's own way keeps them as JSON text that
//! every line parses again, and every `record` on a span parses and
//! rewrites: on the gateway, which logs every request, the log line and
//! its spans' fields cost about a tenth of its CPU that way
//! (bench/README.md, "The sixth pass").

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::{Context, Layer},
    registry::LookupSpan,
};

/// Keeps every span's fields, as values, for the lines logged inside it.
pub struct SpanFields;

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
            values.record(fields);
        }
    }
}

/// The fmt layer's copy of span fields, left empty: [`SpanFields`] keeps them.
pub struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _: Writer<'writer>, _: R) -> fmt::Result {
        Ok(())
    }
}

/// Named values in the order first set; setting a name again replaces its
/// value in place, so no name appears twice in a line.
#[derive(Default)]
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn set(&mut self, name: &'static str, value: Value) {
        set(&mut self.0, name, value);
    }
}

/// Sets `name` in `entries`: in place if it is there, else at the end.
fn set<'a, V>(entries: &mut Vec<(&'a str, V)>, name: &'a str, value: V) {
    match entries.iter_mut().find(|(known, _)| *known == name) {
        Some(slot) => slot.1 = value,
        None => entries.push((name, value)),
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field.name(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field.name(), format!("{value:?}").into());
    }
}

/// Writes one JSON object, key by key.
struct Line {
    out: Vec<u8>,
    empty: bool,
}

impl Line {
    fn new() -> Self {
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        Self { out, empty: true }
    }

    fn entry(&mut self, key: &str, value: &impl Serialize) -> fmt::Result {
        self.key(key)?;
        serde_json::to_writer(&mut self.out, value).map_err(|_| fmt::Error)
    }

    /// Opens an object under `key`: its entries follow until [`Self::close`].
    fn open(&mut self, key: &str) -> fmt::Result {
        self.key(key)?;
        self.out.push(b'{');
        self.empty = true;
        Ok(())
    }

    fn key(&mut self, key: &str) -> fmt::Result {
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        serde_json::to_writer(&mut self.out, key).map_err(|_| fmt::Error)?;
        self.out.push(b':');
        Ok(())
    }

    fn close(&mut self) {
        self.out.push(b'}');
        self.empty = false;
    }

    fn finish(mut self) -> Result<String, fmt::Error> {
        self.out.push(b'}');
        String::from_utf8(self.out).map_err(|_| fmt::Error)
    }
}

/// The trace and span ids of the span `id`, when it is traced.
fn trace_ids(id: &span::Id) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(id, d))?;
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The event formatter for the fmt layer, with [`SpanFields`] installed.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut top = Fields::default();
        top.set(
            "timestamp",
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        top.set("level", meta.level().as_str().into());
        top.set("target", meta.target().into());
        event.record(&mut top);

        let spans: Vec<_> = ctx
            .event_scope()
            .map(|scope| scope.from_root().collect())
            .unwrap_or_default();
        // Before any span's extensions are borrowed: reading the OTel
        // context locks them.
        let trace = spans
            .last()
            .and_then(|innermost| trace_ids(&innermost.id()));
        let extensions: Vec<_> = spans.iter().map(|span| span.extensions()).collect();
        let mut merged: Vec<(&str, &Value)> = Vec::new();
        for fields in extensions.iter().filter_map(|ext| ext.get::<Fields>()) {
            for (name, value) in &fields.0 {
                set(&mut merged, name, value);
            }
        }
        // The correlation keys replace an event's own fields of those names.
        if let Some(id) = merged
            .iter()
            .find(|(name, _)| *name == "request_id")
            .and_then(|(_, value)| value.as_str())
            .filter(|id| !id.is_empty())
        {
            top.set("request_id", id.into());
        }
        if let Some((trace_id, span_id)) = trace {
            top.set("trace_id", trace_id.into());
            top.set("span_id", span_id.into());
        }

        let mut line = Line::new();
        // The span object, written next, replaces an event's own `span`.
        for (key, value) in top
            .0
            .iter()
            .filter(|(key, _)| spans.is_empty() || *key != "span")
        {
            line.entry(key, value)?;
        }
        if let Some(innermost) = spans.last() {
            line.open("span")?;
            for (name, value) in merged.iter().filter(|(name, _)| *name != "name") {
                line.entry(name, value)?;
            }
            line.entry("name", &innermost.name())?;
            line.close();
        }
        writeln!(writer, "{}", line.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::{fmt, prelude::*};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(log: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(SpanFields).with(
            fmt::layer()
                .fmt_fields(NoSpanFields)
                .event_format(JsonLines)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_line_carries_the_event_and_its_spans_fields_the_innermost_winning() {
        let lines = lines(|| {
            let outer = tracing::info_span!(
                "http",
                request_id = "req-1",
                otel.kind = "server",
                status = tracing::field::Empty,
            );
            let _outer = outer.enter();
            let inner = tracing::info_span!("rpc", otel.kind = "client", attempt = 2_u64);
            let _inner = inner.enter();
            outer.record("status", 201_u64);
            tracing::info!(latency_ms = 3.5, path = "/a \"quoted\" \u{e9}", "finished");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        let parsed: Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed["level"], "INFO");
        assert_eq!(parsed["message"], "finished");
        assert_eq!(parsed["latency_ms"], 3.5);
        assert_eq!(parsed["path"], "/a \"quoted\" \u{e9}");
        assert!(parsed["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(parsed["request_id"], "req-1");
        let span = &parsed["span"];
        assert_eq!(span["name"], "rpc", "the innermost span's name");
        assert_eq!(span["otel.kind"], "client", "the innermost span's value");
        assert_eq!(span["attempt"], 2);
        assert_eq!(span["status"], 201, "recorded after the span began");
        assert_eq!(span["request_id"], "req-1");
        // No key twice in one object: `request_id` is once at the top and
        // once in `span`.
        assert_eq!(line.matches("\"otel.kind\":").count(), 1, "{line}");
        assert_eq!(line.matches("\"name\":").count(), 1, "{line}");
        assert_eq!(line.matches("\"request_id\":").count(), 2, "{line}");
    }

    #[test]
    fn an_events_own_fields_named_like_the_lines_keys_are_not_written_twice() {
        let lines = lines(|| {
            let span = tracing::info_span!("http", request_id = "req-1");
            let _span = span.enter();
            tracing::info!(request_id = "mine", span = "mine", "clash");
        });
        let line = &lines[0];
        let parsed: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            parsed["request_id"], "req-1",
            "the span's, as correlation needs"
        );
        assert_eq!(parsed["span"]["name"], "http");
        assert_eq!(line.matches("\"request_id\":").count(), 2, "{line}");
        assert_eq!(line.matches("\"span\":").count(), 1, "{line}");
    }

    #[test]
    fn a_line_outside_any_span_has_no_span_and_no_request_id() {
        let lines = lines(|| tracing::warn!(error = %"boom", "failed"));
        let parsed: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(parsed["level"], "WARN");
        assert_eq!(parsed["error"], "boom");
        assert!(parsed.get("span").is_none(), "{parsed}");
        assert!(parsed.get("request_id").is_none(), "{parsed}");
    }
}
