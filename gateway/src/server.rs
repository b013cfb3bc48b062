//! Wiring: upstream channels, the authenticator, and the HTTP server.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use quill_platform::{authn::ServiceAuth, service_identity::Service};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::{
    app::router,
    config::Config,
    state::{AppState, Shutdown, Upstreams},
};

fn lazy_channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = lazy_channel(&config.auth_url).context("AUTH_URL")?;
    let identity = ServiceAuth::connect(Service::Gateway, &config.authn, auth.clone())
        .await
        .map_err(|e| anyhow::anyhow!("authentication against {}: {e}", config.auth_url))?;
    let upstreams = Upstreams {
        auth,
        content: lazy_channel(&config.content_url).context("CONTENT_URL")?,
        notification: lazy_channel(&config.notification_url).context("NOTIFICATION_URL")?,
        credentials: identity.credentials.clone(),
    };
    let (trigger, signal) = Shutdown::new();
    let state = AppState {
        authn: identity.authn,
        redis: identity.redis,
        upstreams,
        config: Arc::new(config),
        shutdown: signal,
    };
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway listening");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    // Graceful shutdown waits for every response to finish: end the
    // endless ones (notification streams) as soon as it begins.
    .with_graceful_shutdown(async move {
        shutdown.await;
        trigger.fire();
    })
    .await?;
    Ok(())
}
