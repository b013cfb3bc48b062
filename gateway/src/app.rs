//! The router and the middleware every request passes through.

use std::time::Duration;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderName, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use quill_platform::{metrics, quota_headers, trace_context};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::{
        CompressionLayer, CompressionLevel,
        predicate::{NotForContentType, Predicate, SizeAbove},
    },
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::{DefaultOnResponse, OnResponse, TraceLayer},
};
use tracing::{Level, field::Empty};

use crate::{
    avatar, challenge, conditional, config::CorsOrigins, error::ApiError, routes, state::AppState,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let cors = cors(&state.config.cors_origins);
    routes::all()
        .into_router()
        .fallback(|| async { ApiError::not_found("route") })
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    axum::http::header::AUTHORIZATION,
                ]))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(on_response),
                )
                .layer(middleware::from_fn(record_metrics))
                .layer(middleware::from_fn(challenge::announce_ignored_credentials))
                .layer(middleware::from_fn(rate_limit_headers))
                .layer(middleware::from_fn_with_state(state.clone(), avatar::scope))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "body",
                        "internal server error",
                    )
                    .into_response()
                }))
                .layer(middleware::from_fn_with_state(state.clone(), deadline))
                .layer(middleware::from_fn(conditional::name_encoding))
                .layer(compression())
                .layer(middleware::from_fn(conditional::validate))
                .layer(cors)
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state)
}

/// gzip, Brotli or zstd, as the client's `Accept-Encoding` prefers, for
/// answers worth it: below about a kilobyte the framing eats the gain.
/// Images are compressed already, and an event stream must not be held
/// back to fill a compression block.
fn compression() -> CompressionLayer<impl Predicate> {
    const WORTH_COMPRESSING_BYTES: u64 = 1024;
    CompressionLayer::new()
        .quality(CompressionLevel::Fastest)
        .compress_when(
            SizeAbove::new(WORTH_COMPRESSING_BYTES)
                .and(NotForContentType::GRPC)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::SSE),
        )
}

/// What browsers need for a cross-origin call with a token. Headers are
/// named: the Fetch standard does not let `*` cover `Authorization`. No
/// credentials mode ever: the API reads its token from that header, not
/// from cookies, and a wildcard origin must not be paired with it anyway.
/// Preflights are cached for 10 minutes.
fn cors(origins: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
            REQUEST_ID,
        ])
        .expose_headers([
            REQUEST_ID,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            header::ETAG,
            quota_headers::RATELIMIT_POLICY,
            quota_headers::RATELIMIT,
        ])
        .max_age(Duration::from_secs(600));
    match origins {
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::List(list) => layer.allow_origin(AllowOrigin::list(list.iter().cloned())),
    }
}

/// The rate-limit budgets the request counted against, in the gateway or
/// in the services it called (see `quota_headers`), on its answer.
async fn rate_limit_headers(request: Request, next: Next) -> Response {
    let (mut response, quotas) = quota_headers::scope(next.run(request)).await;
    response.headers_mut().extend(quotas);
    response
}

/// Each request's whole exchange is bounded. It outlasts the RPC deadline,
/// so an upstream's own timeout answers first; an upload also streams its
/// body in (5 MiB over a slow link), so it has a deadline of its own.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let limit = if request.method() == Method::POST && route == Some(routes::uploads::PATH) {
        state.config.uploads.timeout
    } else {
        state.config.rpc_deadline * 2 + Duration::from_secs(1)
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "body", "timed out").into_response(),
    }
}

/// Every log line of a request carries its id, taken from the client's
/// `x-request-id` or generated. The span continues the caller's trace
/// (W3C `traceparent`) or starts one, and carries the OpenTelemetry HTTP
/// server attributes; the route is the matched pattern, never the raw path.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let method = request.method();
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "http",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        url.path = %request.uri().path(),
        http.route = route,
        http.response.status_code = Empty,
        request_id,
    );
    trace_context::set_parent_from_headers(&span, request.headers());
    span
}

fn on_response(response: &Response, latency: Duration, span: &tracing::Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    DefaultOnResponse::new()
        .level(Level::INFO)
        .on_response(response, latency, span);
}

/// `http_server_request_duration_seconds`, labelled by method, the matched
/// route (`unmatched` for the fallback) and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    // Only the standard methods as labels: any other token is the client's choice.
    let method = match method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::OPTIONS
        | Method::CONNECT
        | Method::TRACE => method.as_str(),
        _ => "_OTHER",
    };
    metrics::record_http(
        method,
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}
