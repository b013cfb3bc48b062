//! The settings every Quill process may read. Each service and the gateway
//! declare their own next to their `Config`.

crate::settings! {
    ALL;
    /// Redis: the session cache, rate limits and content's read cache (may
    /// carry a password).
    REDIS_URL = "redis://127.0.0.1:6379";
    /// Namespaces every Redis key; the same in every process of one system.
    REDIS_PREFIX = "quill:";
    /// Proves one Quill process to another: 32+ random bytes, the same in
    /// every process (`openssl rand -hex 32`). Required to serve; `just up`
    /// makes one per run.
    SERVICE_TOKEN_SECRET = "";
    /// A file holding `SERVICE_TOKEN_SECRET` (a mounted Kubernetes Secret);
    /// wins over the variable.
    SERVICE_TOKEN_SECRET_FILE = "";
    /// Where auth serves gRPC (content, notification and the gateway call
    /// it): one URL whose host resolves to every replica (a headless
    /// Service), or a comma-separated list; calls are balanced over the
    /// replicas whose health says they serve, re-resolved every 2 s.
    AUTH_URL = "http://127.0.0.1:50051";
    /// Where content serves gRPC (notification and the gateway call it); as
    /// `AUTH_URL`.
    CONTENT_URL = "http://127.0.0.1:50052";
    /// After SIGTERM, how many seconds a process keeps answering while it
    /// reports not ready (gRPC health, `/readyz`), so callers' balancers and
    /// Kubernetes stop sending it new calls before it stops listening; the
    /// bounded drain of what is in flight follows. 0 on a developer machine;
    /// the Kubernetes base sets 5 (callers re-check every 2 s).
    SHUTDOWN_DELAY_SECS = "0";
    /// The window, in seconds, of every rate limit (auth, content).
    RATE_LIMIT_WINDOW_SECS = "60";
    /// A service's admin listener serving `/metrics` (empty or `0`
    /// disables it; the gateway has `GATEWAY_METRICS_LISTEN`).
    METRICS_LISTEN = "(127.0.0.1:9101, :9102, :9103 for auth, content, notification)";
    /// `production` makes development conveniences (generated keys, sample
    /// secrets) refuse to start; also names the environment in traces.
    DEPLOYMENT_ENVIRONMENT = "development";
    /// Where traces go over OTLP (unset: no export).
    OTEL_EXPORTER_OTLP_ENDPOINT = "";
    /// `grpc` or `http/protobuf`.
    OTEL_EXPORTER_OTLP_PROTOCOL = "grpc";
    /// Overrides `OTEL_EXPORTER_OTLP_PROTOCOL` for traces.
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "";
    /// The `service.name` of this process's spans.
    OTEL_SERVICE_NAME = "(the process name, e.g. quill-auth)";
    /// Log filter (`tracing` env-filter syntax). Logs are JSON lines when
    /// stdout is not a terminal, compact text on one.
    RUST_LOG = "(info; warn for h2, hyper, sqlx, lapin)";
}
