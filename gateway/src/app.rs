//! The router and the middleware every request passes through.

use std::time::Duration;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, StatusCode},
    response::IntoResponse,
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::CorsLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    timeout::TimeoutLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{error::ApiError, routes, state::AppState};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    // Outlasts the RPC deadline, so the upstream's own timeout answers first.
    let request_timeout = state.config.rpc_deadline * 2 + Duration::from_secs(1);
    Router::new()
        .merge(routes::users::routes())
        .merge(routes::admin::routes())
        .merge(routes::profiles::routes())
        .merge(routes::articles::routes())
        .merge(routes::comments::routes())
        .merge(routes::tags::routes())
        .merge(routes::health::routes())
        .merge(routes::docs::routes())
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
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "body",
                        "internal server error",
                    )
                    .into_response()
                }))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::GATEWAY_TIMEOUT,
                    request_timeout,
                ))
                .layer(CorsLayer::permissive())
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state)
}

/// Every log line of a request carries its id, taken from the client's
/// `x-request-id` or generated.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "http",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        request_id,
    )
}
