//! Wiring: Redis, upstream channels, the token verifier, and the HTTP server.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use quill_platform::{
    revocation::{self, RevocationList},
    token::TokenVerifier,
};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::{
    app::router,
    config::Config,
    rate_limit::RateLimiter,
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
    let redis = revocation::connect(&config.redis_url)
        .await
        .context("connecting to Redis")?;
    let upstreams = Upstreams {
        auth: lazy_channel(&config.auth_url).context("AUTH_URL")?,
        content: lazy_channel(&config.content_url).context("CONTENT_URL")?,
        notification: lazy_channel(&config.notification_url).context("NOTIFICATION_URL")?,
    };
    let verifier = TokenVerifier::from_auth_service(upstreams.auth.clone())
        .await
        .map_err(|e| anyhow::anyhow!("fetching token keys from auth: {e}"))?;
    let (trigger, signal) = Shutdown::new();
    let state = AppState {
        revocations: RevocationList::new(redis.clone(), config.redis_prefix.clone()),
        rate_limiter: RateLimiter::new(redis.clone(), config.redis_prefix.clone()),
        redis,
        verifier: Arc::new(verifier),
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
