//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: its
//! backends answer their own health checks, so a load balancer only routes
//! to a gateway that can serve).

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::{Map, Value, json};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let deadline = state
        .config
        .rpc_deadline
        .min(std::time::Duration::from_secs(2));
    let mut checks = Map::new();
    let mut ready = true;
    for (name, channel) in state.upstreams.all() {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(deadline);
        let serving = matches!(
            HealthClient::new(channel).check(request).await,
            Ok(r) if r.get_ref().status() == ServingStatus::Serving
        );
        ready &= serving;
        checks.insert(
            name.into(),
            Value::from(if serving { "up" } else { "down" }),
        );
    }
    let mut redis = state.redis.clone();
    let redis_up = tokio::time::timeout(
        deadline,
        redis::cmd("PING").query_async::<String>(&mut redis),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    ready &= redis_up;
    checks.insert(
        "redis".into(),
        Value::from(if redis_up { "up" } else { "down" }),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": if ready { "ready" } else { "not ready" }, "checks": checks });
    (status, Json(body))
}
