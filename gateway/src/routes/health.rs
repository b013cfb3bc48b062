//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: its
//! backends answer their own health checks, so a load balancer only routes
//! to a gateway that can serve).

use std::collections::BTreeMap;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    bodies::health::{ALIVE, Check, Readiness},
    route_table::{RouteTable, get},
    state::AppState,
};

pub fn routes() -> RouteTable {
    RouteTable::default()
        .route("/healthz", get(|| async { Json(ALIVE) }))
        .route("/readyz", get(readyz))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let deadline = state
        .config
        .rpc_deadline
        .min(std::time::Duration::from_secs(2));
    let mut checks = BTreeMap::new();
    for (name, service, channel) in state.upstreams.all() {
        // The service's own name: its readiness (database up, not
        // draining), where "" would only say the process is alive.
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        request.set_timeout(deadline);
        let serving = matches!(
            HealthClient::new(channel).check(request).await,
            Ok(r) if r.get_ref().status() == ServingStatus::Serving
        );
        checks.insert(name, Check::up_if(serving));
    }
    let mut redis = state.redis.clone();
    let redis_up = tokio::time::timeout(
        deadline,
        redis::cmd("PING").query_async::<String>(&mut redis),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    checks.insert("redis", Check::up_if(redis_up));
    // Shutting down: balancers must stop sending requests here while the
    // gateway still answers them (`SHUTDOWN_DELAY_SECS`).
    checks.insert("accepting", Check::up_if(!state.shutdown.is_cancelled()));
    let readiness = Readiness::new(checks);
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}
