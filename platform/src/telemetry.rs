//! Logging and tracing set-up: JSON lines when stdout is not a terminal
//! (production, CI), human-readable otherwise; the level always comes from
//! `RUST_LOG`. Every span is also an OpenTelemetry span (so each JSON line
//! carries `trace_id` and `span_id`, and contexts propagate between
//! processes); spans are exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set.
//!
//! Environment:
//! - `RUST_LOG`: the filter (default [`DEFAULT_FILTER`]).
//! - `OTEL_EXPORTER_OTLP_ENDPOINT`: export spans there (unset: no export).
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default) or `http/protobuf`.
//! - `OTEL_SERVICE_NAME`: overrides the service name given to [`init`].
//! - `DEPLOYMENT_ENVIRONMENT`: `deployment.environment` (default `development`).
//! - `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`: as the
//!   OpenTelemetry SDK reads them.

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{
    json_lines::{JsonLines, NoSpanFields, SpanFields},
    settings,
};

/// Default filter: our crates at info, the chatty transport crates at warn.
/// An unfiltered subscriber logs h2/tonic at TRACE and costs >10x throughput.
pub const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,hyper_util=warn,sqlx=warn,lapin=warn";

/// Spans waiting for export at most; beyond that new spans are dropped
/// rather than growing memory while the collector is away.
const MAX_QUEUED_SPANS: usize = 4096;

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Flushes and shuts the tracer provider down when dropped: keep it alive
/// until the end of `main`.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now (tests call this before asserting).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber, tracer provider and W3C propagator for
/// `service_name` (e.g. `"auth"`). Call it once, inside the Tokio runtime
/// (the OTLP gRPC exporter needs one); later calls (tests) are no-ops and
/// return an inert guard.
pub fn init(service_name: &str) -> TelemetryGuard {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return TelemetryGuard { provider: None };
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(service_name);
    opentelemetry::global::set_tracer_provider(provider.clone());
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("quill"))
        .with_location(false)
        .with_threads(false);

    let filter = settings::RUST_LOG
        .value()
        .and_then(|filter| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if std::io::stdout().is_terminal() {
        registry.with(fmt::layer().compact()).try_init()
    } else {
        registry
            .with(SpanFields)
            .with(
                fmt::layer()
                    .fmt_fields(NoSpanFields)
                    .event_format(JsonLines),
            )
            .try_init()
    };
    match result {
        Ok(()) => TelemetryGuard {
            provider: Some(provider),
        },
        // Someone else installed a subscriber first: our spans go nowhere.
        Err(_) => {
            let _ = provider.shutdown();
            TelemetryGuard { provider: None }
        }
    }
}

/// The provider: always there (so spans get ids that logs and propagation
/// use), exporting only when an OTLP endpoint is configured.
fn tracer_provider(service_name: &str) -> SdkTracerProvider {
    let service_name = settings::OTEL_SERVICE_NAME
        .value()
        .unwrap_or_else(|| service_name.to_owned());
    let environment = crate::config::deployment_environment();
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("deployment.environment", environment),
        ])
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = settings::OTEL_EXPORTER_OTLP_ENDPOINT.value() {
        match span_exporter(&endpoint) {
            Ok(exporter) => {
                let batch = BatchSpanProcessor::builder(exporter)
                    .with_batch_config(
                        BatchConfigBuilder::default()
                            .with_max_queue_size(MAX_QUEUED_SPANS)
                            .build(),
                    )
                    .build();
                builder = builder.with_span_processor(batch);
            }
            // No subscriber yet: stderr is the only place to say it.
            Err(e) => eprintln!("OTLP exporter to {endpoint} not started: {e}"),
        }
    }
    builder.build()
}

fn span_exporter(
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let protocol = settings::OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
        .value()
        .or_else(|| settings::OTEL_EXPORTER_OTLP_PROTOCOL.value_or_default())
        .unwrap_or_default();
    if protocol == "http/protobuf" {
        use opentelemetry_otlp::WithHttpConfig as _;
        // The HTTP exporter appends /v1/traces to the base endpoint itself.
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(OnRuntime::current())
            .build()
    } else {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
    }
}

/// The hyper OTLP/HTTP client needs a Tokio runtime, and the batch span
/// processor exports from a thread of its own: run each send on the runtime
/// that was current at `init`.
#[derive(Debug)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    runtime: Option<tokio::runtime::Handle>,
}

impl OnRuntime {
    fn current() -> Self {
        Self {
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(
                std::time::Duration::from_secs(10),
                None,
            ),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let Some(runtime) = &self.runtime else {
            return Err("OTLP/HTTP export needs a Tokio runtime at telemetry::init".into());
        };
        let client = self.client.clone();
        runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
