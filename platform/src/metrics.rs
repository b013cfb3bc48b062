//! Prometheus metrics: one process-wide registry, the metric families every
//! Quill process records, and the admin HTTP server that serves them.
//!
//! Names and labels follow the OpenTelemetry semantic conventions as an
//! OpenTelemetry Prometheus exporter writes them (dots become underscores,
//! the unit is a suffix), so dashboards and alerts written for those
//! conventions work unchanged. Request counts are the histograms' `_count`.
//! - `http_server_request_duration_seconds{http_request_method,http_route,http_response_status_code}`
//! - `rpc_server_call_duration_seconds` and `rpc_client_call_duration_seconds`
//!   `{rpc_system_name,rpc_method,rpc_response_status_code}` (`rpc_method` is
//!   `package.Service/Method`, the status its canonical name)
//! - `messaging_process_duration_seconds{messaging_system,messaging_destination_name,messaging_operation_name,error_type}`:
//!   one delivery, from its arrival to its settlement
//! - `messaging_consumer_lag_seconds{messaging_destination_name}`: how old an
//!   event is when its consumer starts on it (histogram), and
//!   `messaging_consumer_lag_messages{messaging_destination_name}`: deliveries
//!   waiting in the queue, sampled by the consumer
//! - `db_client_connection_count{db_client_connection_pool_name,db_client_connection_state}`
//!   (`idle`, `used`: they add up to the pool's size) and
//!   `db_client_connection_max{db_client_connection_pool_name}`, sampled at scrape time
//! - `process_*` (CPU, resident memory, open files, start time; Linux)
//!
//! Quill's own, where no convention exists:
//! - `events_published_total{routing_key}`,
//!   `events_consumed_total{queue,routing_key,outcome}` (ok|duplicate|retried|requeued|dead_lettered)
//! - `outbox_backlog{db}` and `outbox_oldest_age_seconds{db}`: unpublished
//!   outbox rows and the age of the oldest, updated by the relay
//! - `cache_requests_total{cache,result}` (hit|miss|error): reads through
//!   the Redis cache ([`crate::cache`])
//! - `notifications_pushed_total{path}`: notifications pushed to this
//!   instance's live streams, by how they reached it: `committed` by its own
//!   consumer, or `announced` by PostgreSQL's `NOTIFY` and read back

use std::{
    net::SocketAddr,
    sync::{LazyLock, Mutex},
};

use crate::shutdown::CancellationToken;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Event age buckets in seconds: from a live pipeline (milliseconds) to a
/// consumer that has fallen minutes behind, or a retry queue's delays.
const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Items written together by a batch writer: one alone, up to the largest
/// batch any writer takes.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// `rpc.system.name`: every RPC Quill makes or serves is gRPC.
const RPC_SYSTEM: &str = "grpc";

/// The metric families; get them with [`get`].
pub struct Metrics {
    registry: Registry,
    pub http_server_duration: HistogramVec,
    pub rpc_server_duration: HistogramVec,
    pub rpc_client_duration: HistogramVec,
    pub messaging_process_duration: HistogramVec,
    pub messaging_consumer_lag: HistogramVec,
    pub messaging_consumer_lag_messages: IntGaugeVec,
    pub db_connection_count: IntGaugeVec,
    pub db_connection_max: IntGaugeVec,
    pub events_published: IntCounterVec,
    pub events_consumed: IntCounterVec,
    pub outbox_backlog: IntGaugeVec,
    pub outbox_oldest_age: GaugeVec,
    pub cache_requests: IntCounterVec,
    pub write_batch_size: HistogramVec,
    pub notifications_pushed: IntCounterVec,
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
        let histogram = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
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
        let rpc_labels = &["rpc_system_name", "rpc_method", "rpc_response_status_code"];
        let pool = "db_client_connection_pool_name";
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique");
        let outbox_oldest_age = GaugeVec::new(
            Opts::new(
                "outbox_oldest_age_seconds",
                "Age of the oldest outbox row not yet published (0 when none), by database",
            ),
            &["db"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(outbox_oldest_age.clone()))
            .expect("unique");
        Self {
            http_server_duration: histogram(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests, until the response head",
                LATENCY_BUCKETS,
                &[
                    "http_request_method",
                    "http_route",
                    "http_response_status_code",
                ],
            ),
            rpc_server_duration: histogram(
                "rpc_server_call_duration_seconds",
                "Duration of incoming gRPC calls, until the status is sent",
                LATENCY_BUCKETS,
                rpc_labels,
            ),
            rpc_client_duration: histogram(
                "rpc_client_call_duration_seconds",
                "Duration of outgoing gRPC calls, until the status is received",
                LATENCY_BUCKETS,
                rpc_labels,
            ),
            messaging_process_duration: histogram(
                "messaging_process_duration_seconds",
                "Duration of processing one delivery, until it is settled with the broker",
                LATENCY_BUCKETS,
                &[
                    "messaging_system",
                    "messaging_destination_name",
                    "messaging_operation_name",
                    "error_type",
                ],
            ),
            messaging_consumer_lag: histogram(
                "messaging_consumer_lag_seconds",
                "Age of an event (since it occurred) when its consumer starts processing it",
                LAG_BUCKETS,
                &["messaging_destination_name"],
            ),
            messaging_consumer_lag_messages: gauge(
                "messaging_consumer_lag_messages",
                "Deliveries waiting in a consumer's queue, sampled by the consumer",
                &["messaging_destination_name"],
            ),
            db_connection_count: gauge(
                "db_client_connection_count",
                "Database pool connections by state (idle, used)",
                &[pool, "db_client_connection_state"],
            ),
            db_connection_max: gauge(
                "db_client_connection_max",
                "The most connections a database pool opens",
                &[pool],
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
            outbox_oldest_age,
            cache_requests: counter(
                "cache_requests_total",
                "Reads through the Redis cache, by cache and result (hit, miss, error)",
                &["cache", "result"],
            ),
            write_batch_size: histogram(
                "write_batch_size",
                "Items a batch writer wrote in one go, by what it writes (articles, comments)",
                BATCH_BUCKETS,
                &["batch"],
            ),
            notifications_pushed: counter(
                "notifications_pushed_total",
                "Notifications pushed to live streams, by path (committed here, announced by NOTIFY)",
                &["path"],
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

/// Which end of a gRPC call is recording it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcSide {
    Server,
    Client,
}

/// Records one finished gRPC call; `method` is `package.Service/Method`.
pub fn record_rpc(side: RpcSide, method: &str, code: i32, seconds: f64) {
    let m = get();
    let histogram = match side {
        RpcSide::Server => &m.rpc_server_duration,
        RpcSide::Client => &m.rpc_client_duration,
    };
    histogram
        .with_label_values(&[RPC_SYSTEM, method, grpc_code_name(code)])
        .observe(seconds);
}

/// Records one HTTP response.
pub fn record_http(method: &str, route: &str, status: u16, seconds: f64) {
    get()
        .http_server_duration
        .with_label_values(&[method, route, &status.to_string()])
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
