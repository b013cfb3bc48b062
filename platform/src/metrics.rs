//! Prometheus metrics: one process-wide registry, the metric families every
//! Quill process records, and the admin HTTP server that serves them.
//!
//! Families (all in the text exposition format at `/metrics`):
//! - `rpc_server_requests_total{service,method,code}`, `rpc_server_duration_seconds{service,method}`
//! - `http_server_requests_total{method,route,status}`, `http_server_duration_seconds{method,route}`
//! - `events_published_total{routing_key}`
//! - `events_consumed_total{queue,routing_key,outcome}` (ok|duplicate|retried|requeued|dead_lettered)
//! - `outbox_backlog{db}`: unsent outbox rows, updated by the relay every poll
//! - `db_pool_connections{db,state}` (size|idle), sampled at scrape time

use std::{
    net::SocketAddr,
    sync::{LazyLock, Mutex},
};

use crate::shutdown::CancellationToken;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The metric families; get them with [`get`].
pub struct Metrics {
    registry: Registry,
    pub rpc_server_requests: IntCounterVec,
    pub rpc_server_duration: HistogramVec,
    pub http_server_requests: IntCounterVec,
    pub http_server_duration: HistogramVec,
    pub events_published: IntCounterVec,
    pub events_consumed: IntCounterVec,
    pub outbox_backlog: IntGaugeVec,
    pub db_pool_connections: IntGaugeVec,
    samplers: Mutex<Vec<(String, Sampler)>>,
}

/// Sets gauges from state sampled at scrape time (a database pool's size).
pub type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique");
            h
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique");
            g
        };
        Self {
            rpc_server_requests: counter(
                "rpc_server_requests_total",
                "gRPC calls served, by service, method and status code",
                &["service", "method", "code"],
            ),
            rpc_server_duration: histogram(
                "rpc_server_duration_seconds",
                "gRPC call latency until the status is sent",
                &["service", "method"],
            ),
            http_server_requests: counter(
                "http_server_requests_total",
                "HTTP requests served, by method, matched route and status",
                &["method", "route", "status"],
            ),
            http_server_duration: histogram(
                "http_server_duration_seconds",
                "HTTP request latency until the response head",
                &["method", "route"],
            ),
            events_published: counter(
                "events_published_total",
                "Events published by the outbox relay and confirmed by the broker",
                &["routing_key"],
            ),
            events_consumed: counter(
                "events_consumed_total",
                "Deliveries settled by consumers, by outcome (ok, retried, dead_lettered, duplicate, requeued)",
                &["queue", "routing_key", "outcome"],
            ),
            outbox_backlog: gauge(
                "outbox_backlog",
                "Outbox rows waiting to be published, by database",
                &["db"],
            ),
            db_pool_connections: gauge(
                "db_pool_connections",
                "Database pool connections (state: size, idle), by database",
                &["db", "state"],
            ),
            samplers: Mutex::new(Vec::new()),
            registry,
        }
    }

    /// Everything in the Prometheus text format, samplers run now.
    pub fn render(&self) -> String {
        for (_, sample) in self
            .samplers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            sample(self);
        }
        let mut out = String::new();
        let _ = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

/// Runs `sample` before every scrape; a second sampler under the same
/// `key` (the same database pool registered twice) is ignored.
pub fn add_sampler(key: &str, sample: Sampler) {
    let mut samplers = get()
        .samplers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !samplers.iter().any(|(k, _)| k == key) {
        samplers.push((key.to_owned(), sample));
    }
}

/// Records one finished gRPC call on the server side.
pub fn record_rpc(service: &str, method: &str, code: i32, seconds: f64) {
    let m = get();
    m.rpc_server_requests
        .with_label_values(&[service, method, grpc_code_name(code)])
        .inc();
    m.rpc_server_duration
        .with_label_values(&[service, method])
        .observe(seconds);
}

/// Records one HTTP response.
pub fn record_http(method: &str, route: &str, status: u16, seconds: f64) {
    let m = get();
    m.http_server_requests
        .with_label_values(&[method, route, &status.to_string()])
        .inc();
    m.http_server_duration
        .with_label_values(&[method, route])
        .observe(seconds);
}

/// The canonical upper-case name of a gRPC status code (`OK`, `NOT_FOUND`).
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// `GET /metrics` handler body.
pub async fn handler() -> impl axum::response::IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        get().render(),
    )
}

/// A router serving only `GET /metrics`.
pub fn router() -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(handler))
}

/// Serves `/metrics` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Starts the admin metrics server on `METRICS_LISTEN` (default
/// `default_addr`; `0` or empty disables it) in the background, stopping on
/// `shutdown`. Returns the bound address, or `None` when disabled. Call it
/// inside the runtime.
pub fn spawn_admin_server(
    default_addr: &str,
    shutdown: CancellationToken,
) -> std::io::Result<Option<SocketAddr>> {
    let setting = crate::settings::METRICS_LISTEN;
    let Some(addr) = optional_listen(&setting, default_addr)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
    else {
        return Ok(None);
    };
    spawn_admin_server_on(setting.name, addr, shutdown).map(Some)
}

/// An admin listener's address: `default` when the variable is unset, none
/// when it is empty or `0` (so empty cannot mean the default here, unlike
/// other settings).
pub fn optional_listen(
    setting: &crate::config::Setting,
    default: &str,
) -> Result<Option<SocketAddr>, crate::config::ConfigError> {
    let value = std::env::var(setting.name).unwrap_or_else(|_| default.to_owned());
    let value = value.trim();
    if value.is_empty() || value == "0" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e: std::net::AddrParseError| setting.invalid(value, e.to_string()))
}

/// Starts the admin metrics server on `addr` in the background until
/// `shutdown`; `setting` names where the address came from, for the error.
/// Returns the bound address.
pub fn spawn_admin_server_on(
    setting: &str,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {setting}={addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "metrics server listening");
    tokio::spawn(async move {
        if let Err(e) = serve(listener, shutdown).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
