//! `quill-content`: the content service. It serves health and reflection; its
//! own API is added by the content issue.

use anyhow::Context;
use quill_platform::{config::env_or, grpc, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let listen: std::net::SocketAddr = env_or(
        "CONTENT_LISTEN",
        "127.0.0.1:50052".parse().expect("valid default"),
    )?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding CONTENT_LISTEN={listen}"))?;
    let (_health, health_service) = tonic_health::server::health_reporter();
    let routes = grpc::base_routes(health_service)?;
    grpc::serve(listener, routes.routes(), shutdown::signal()).await?;
    Ok(())
}
