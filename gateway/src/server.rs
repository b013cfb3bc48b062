//! Wiring: upstream channels, the authenticator, and the HTTP server.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{Request, body::Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use quill_platform::{
    account_cache,
    authn::ServiceAuth,
    balance,
    rate_limit::RateLimiter,
    service_identity::Service,
    shutdown::{CancellationToken, DRAIN_TIMEOUT},
};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::{
    app::router,
    config::Config,
    images::ImageStore,
    state::{AppState, Shared, Upstreams},
};

/// Serves the REST API on `listener` until `shutdown` is cancelled, then
/// drains the open connections.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let auth = balance::to_auth(&config.auth_url)?;
    let identity = ServiceAuth::connect(Service::Gateway, &config.authn, auth.clone())
        .await
        .map_err(|e| anyhow::anyhow!("authentication against {}: {e}", config.auth_url))?;
    let upstreams = Upstreams {
        auth,
        content: balance::to_content(&config.content_url)?,
        notification: balance::to_notification(&config.notification_url)?,
        credentials: identity.credentials.clone(),
    };
    let (header_read_timeout, drain_delay) = (config.header_read_timeout, config.drain_delay);
    let images = ImageStore::open(&config.uploads.location, &config.uploads.store_options)
        .map_err(|e| anyhow::anyhow!("GATEWAY_UPLOADS_URL: {e}"))?;
    // In the background: an unreachable store is retried for minutes.
    tokio::spawn({
        let images = images.clone();
        async move { images.check().await }
    });
    let state = AppState::new(Shared {
        upload_limiter: RateLimiter::new(identity.redis.clone(), config.authn.redis_prefix.clone()),
        default_avatar: config.uploads.default_avatar.as_deref().map(Arc::from),
        images,
        authn: identity.authn,
        accounts: account_cache::cache(
            identity.redis.clone(),
            &config.authn.redis_prefix,
            config.account_cache_ttl,
        ),
        redis: identity.redis,
        upstreams,
        config,
        shutdown: shutdown.child_token(),
    });
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway listening");
    // Readiness turns 503 at once (the state's token is a child of
    // `shutdown`); the listener closes only after the delay.
    let stop_listening = async move {
        shutdown.cancelled().await;
        tokio::time::sleep(drain_delay).await;
    };
    serve(listener, router(state), header_read_timeout, stop_listening).await;
    Ok(())
}

/// `axum::serve` plus a deadline on each request head: a client that opens
/// connections and never finishes its headers (slowloris) would otherwise
/// hold a connection and a task each, forever. Handlers see the peer as
/// `ConnectInfo<SocketAddr>`, as with `into_make_service_with_connect_info`.
async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    stop_listening: impl std::future::Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connections = GracefulShutdown::new();
    tokio::pin!(stop_listening);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // A connection reset before accept, or out of file
                    // descriptors: the listener itself is fine. Pause so
                    // the second kind does not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop_listening => break,
        };
        // Answers go out as they are written: with Nagle's algorithm, the
        // last piece of a body written in several (a compressed stream)
        // waits for the client's delayed ACK, 40 ms on Linux.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Mostly clients going away mid-request, and head timeouts.
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    // Refuse new connections while the open ones drain, for a bounded time.
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}
