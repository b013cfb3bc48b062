//! Wiring: database, Redis, keys, the gRPC server, and the outbox relay
//! publishing auth's events.

use std::{future::Future, sync::Arc};

use anyhow::Context;
use quill_platform::{
    authn::Authenticator,
    db,
    events::{OutboxRelay, catalog},
    grpc,
    rate_limit::RateLimiter,
    service_identity::{ServiceSecret, ServiceVerifier},
    sessions::{self, Sessions},
    token::TokenVerifier,
};
use quill_proto::auth::v1::auth_service_server::AuthServiceServer;
use sqlx::migrate::Migrator;
use tokio::{net::TcpListener, sync::oneshot};

use crate::{
    accounts::{Accounts, AccountsParts, DbSessionSource},
    config::Config,
    grpc::AuthGrpc,
    login_guard::LoginGuard,
    password::PasswordHasherPool,
    tokens::AccessTokenIssuer,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Creates the database if needed and applies the migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    db::prepare(&config.database_url, 2, &MIGRATOR).await?;
    Ok(())
}

/// Runs the service on `listener` until `shutdown` resolves. The outbox
/// relay stops after the gRPC server has drained, so the events of the last
/// requests still go out.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service_secret = ServiceSecret::required(config.authn.service_secret.as_ref())?;
    let pool = db::prepare(
        &config.database_url,
        config.database_max_connections,
        &MIGRATOR,
    )
    .await
    .context("preparing the auth database")?;
    let redis = sessions::connect(&config.authn.redis_url)
        .await
        .context("connecting to Redis")?;
    let issuer = AccessTokenIssuer::new(
        config.signing_key_pem.as_deref(),
        config.issuer.clone(),
        config.audience.clone(),
        config.access_token_ttl,
    )?;
    let verifier = TokenVerifier::new(
        [(issuer.kid(), issuer.public_key_pem())],
        &config.issuer,
        &config.audience,
    )?;
    let relay = OutboxRelay::new(
        pool.clone(),
        &config.events.amqp_url,
        &config.events.exchange,
    )
    .poll_interval(config.events.relay_poll_interval)
    .declare_queues(catalog::all(&config.events, &config.events_queue_prefix));
    let sessions = Sessions::new(
        redis.clone(),
        config.authn.redis_prefix.clone(),
        Arc::new(DbSessionSource(pool.clone())),
    );
    let authn = Authenticator::new(
        verifier,
        sessions.clone(),
        ServiceVerifier::new(&service_secret),
    );
    let accounts = Accounts::new(
        pool,
        AccountsParts {
            hasher: PasswordHasherPool::new(config.max_concurrent_hashes)?,
            issuer: Arc::new(issuer),
            sessions,
            guard: LoginGuard::new(
                RateLimiter::new(redis, config.authn.redis_prefix.clone()),
                config.limits.clone(),
            ),
            refresh_ttl: config.refresh_token_ttl,
            reauth_window: config.reauth_window,
        },
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthServiceServer<AuthGrpc>>().await;
    let mut routes = grpc::base_routes(health_service)?;
    routes.add_service(quill_platform::message_limits!(AuthServiceServer::new(
        AuthGrpc::new(accounts)
    )));
    // Dropping `stop_relay` (this future cancelled) stops the relay too.
    let (stop_relay, relay_stopped) = oneshot::channel::<()>();
    let relay = tokio::spawn(relay.run(async move {
        let _ = relay_stopped.await;
    }));
    let served = grpc::serve(
        listener,
        routes.routes(),
        authn,
        grpc::MAX_CONCURRENT_STREAMS,
        shutdown,
    )
    .await;
    let _ = stop_relay.send(());
    let _ = relay.await;
    served?;
    Ok(())
}
