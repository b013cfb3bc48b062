//! `quill-gateway`: serves the REST API on GATEWAY_LISTEN, and Prometheus
//! metrics on the admin listener GATEWAY_METRICS_LISTEN.

use anyhow::Context;
use quill_gateway::{Config, server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = quill_platform::telemetry::init("quill-gateway");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding GATEWAY_LISTEN={}", config.listen))?;
    if let Some(addr) = config.metrics_listen {
        quill_platform::metrics::spawn_admin_server_on("GATEWAY_METRICS_LISTEN", addr)?;
    }
    server::run(config, listener, quill_platform::shutdown::signal()).await
}
