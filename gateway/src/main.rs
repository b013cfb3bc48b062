//! `quill-gateway`: serves the REST API on GATEWAY_LISTEN.

use anyhow::Context;
use quill_gateway::{Config, server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = quill_platform::telemetry::init("quill-gateway");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding GATEWAY_LISTEN={}", config.listen))?;
    server::run(config, listener, quill_platform::shutdown::signal()).await
}
