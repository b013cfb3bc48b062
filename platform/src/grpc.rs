//! gRPC plumbing every process shares: clients to other services (service
//! token, trace propagation, retried reads), the server's layers
//! (authentication, tracing, metrics) under `quill_server::GrpcServer`, and
//! the metadata conventions between processes.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    service::Routes,
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_types::ErrorDetails;
use tower_http::{
    classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier},
    trace::TraceLayer,
};
use tracing::field::Empty;

pub use crate::rpc_trace::Traced;
use crate::{
    authn::{Authenticator, AuthnLayer},
    error_info,
    in_flight::InFlight,
    quota_headers::QuotaHeadersLayer,
    request_id::RequestIdLayer,
    retry_calls::{self, RetryCalls},
    rpc_trace::{RpcServerObserveLayer, split_path},
    service_identity::{Identified, ServiceCredentials},
    trace_context,
    unfinished_calls::UnfinishedCallsLayer,
};

/// A channel to another Quill service: every call carries the calling
/// service's token and the caller's trace context, and failed calls are
/// resent to another replica when that is safe (see [`client`]).
pub type ServiceChannel = Traced<Identified<RetryCalls<Channel>>>;

/// Wraps a client channel so every call proves which service makes it, gets
/// a client span and propagates the current trace in its metadata, and calls
/// that never left or that the contract declares free of side effects are
/// resent within a budget ([`crate::retry_calls`]): `AuthServiceClient::new(grpc::client(channel,
/// &credentials))`, typed `AuthServiceClient<grpc::ServiceChannel>`.
pub fn client(channel: Channel, credentials: &ServiceCredentials) -> ServiceChannel {
    Traced::new(Identified::new(
        RetryCalls::new(channel, retry_calls::declared_safe()),
        credentials.clone(),
    ))
}

/// The largest gRPC message any Quill process sends or accepts, set on every
/// generated client and server with [`message_limits!`](crate::message_limits).
/// Tonic's defaults (4 MiB to decode, unbounded to encode) were implicit and
/// asymmetric: a list page one row too large failed on the caller's side
/// with tonic's internal text. Lists are bounded so that their largest page
/// fits under this by construction; the arithmetic and its test live next
/// to the field limits (`quill_content::validation`).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// HTTP/2 streams one client connection may hold open at once on a server
/// that has no long-lived streams: hyper's own default, stated so it is a
/// decision. A service with long-lived streams sets its own, above its cap
/// on them (see notification).
pub const MAX_CONCURRENT_STREAMS: u32 = 200;

/// Applies [`MAX_MESSAGE_BYTES`] to both directions of a generated gRPC
/// client or server: `message_limits!(ContentServiceClient::new(channel))`.
/// A macro because generated types share these methods but no trait.
#[macro_export]
macro_rules! message_limits {
    ($generated:expr) => {
        $generated
            .max_decoding_message_size($crate::grpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::grpc::MAX_MESSAGE_BYTES)
    };
}

/// Metadata key carrying the caller's access token (`Bearer <jwt>`).
pub const AUTHORIZATION: &str = "authorization";
/// Metadata key carrying the edge request id, for log correlation.
pub const REQUEST_ID: &str = "x-request-id";

/// Serves `routes` on `listener` until `shutdown` resolves, then drains
/// in-flight calls. Every call is authenticated by `authn` before it reaches
/// a handler (see [`crate::authn`]). `max_concurrent_streams` is per client
/// connection (usually [`MAX_CONCURRENT_STREAMS`]).
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    authn: Authenticator,
    max_concurrent_streams: u32,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "gRPC server listening"),
        Err(e) => tracing::warn!(error = %e, "gRPC server listening on an unknown address"),
    }
    let in_flight = InFlight::default();
    let stopped = CancellationToken::new();
    let signal = {
        let stopped = stopped.clone();
        async move {
            shutdown.await;
            stopped.cancel();
        }
    };
    let served = Server::builder()
        .max_concurrent_streams(max_concurrent_streams)
        .layer(in_flight.layer())
        .layer(RequestIdLayer)
        .layer(TraceLayer::new(server_failures()).make_span_with(rpc_span))
        .layer(RpcServerObserveLayer)
        .layer(AuthnLayer::new(authn))
        .layer(UnfinishedCallsLayer)
        .layer(QuotaHeadersLayer)
        .add_routes(routes)
        // A custom incoming skips the builder's TCP_NODELAY: without it,
        // an answer written in several frames waits on the client's
        // delayed ACK (40 ms) for its last one.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal);
    // Drained when every call is answered, however long clients keep their
    // idle connections open (see `in_flight`).
    tokio::select! {
        served = served => served,
        () = async {
            stopped.cancelled().await;
            in_flight.settled().await;
        } => Ok(()),
    }
}

/// What counts as the server failing, for the `response failed` ERROR line
/// (which also marks the span as an error): not the statuses that answer a
/// caller's mistake (NOT_FOUND, INVALID_ARGUMENT...). The same split as the
/// span status in `rpc_trace` (OpenTelemetry RPC semantic conventions).
fn server_failures() -> SharedClassifier<GrpcErrorsAsFailures> {
    let callers_mistakes = [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unauthenticated,
    ];
    SharedClassifier::new(callers_mistakes.into_iter().fold(
        GrpcErrorsAsFailures::new(),
        GrpcErrorsAsFailures::with_success,
    ))
}

/// One span per RPC, carrying the edge request id so a request's log lines
/// can be found in every process it touched, the OpenTelemetry RPC
/// attributes, and the caller's trace (W3C `traceparent` metadata) as parent.
/// The status code is recorded when the call ends.
fn rpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (service, method) = split_path(request.uri().path());
    let span = tracing::info_span!(
        "rpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = Empty,
        request_id,
    );
    trace_context::set_parent_from_headers(&span, request.headers());
    span
}

/// The fields of a request that are wrong, each with what is wrong with it:
/// what every service's `Invalid` error holds.
pub type FieldViolations = Vec<(&'static str, String)>;

/// A status whose details name the offending fields (`google.rpc.BadRequest`),
/// which the gateway turns into RealWorld's `{"errors":{field:[msg]}}`, and
/// say why in a stable `reason` (see [`crate::error_info`]).
pub fn field_violations(code: Code, reason: &'static str, violations: &[(&str, String)]) -> Status {
    let summary = violations
        .iter()
        .map(|(field, msg)| format!("{field} {msg}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for (field, msg) in violations {
        details.add_bad_request_violation(*field, msg.clone());
    }
    error_info::with_details(code, reason, &[], summary, details)
}
