//! Wiring: database, Redis, keys, the gRPC server, and the outbox relay
//! publishing auth's events.

use std::{future::Future, sync::Arc};

use anyhow::Context;
use quill_platform::{
    db,
    events::{OutboxRelay, catalog},
    grpc,
    revocation::{self, RevocationList},
    token::TokenVerifier,
};
use quill_proto::auth::v1::auth_service_server::AuthServiceServer;
use sqlx::migrate::Migrator;
use tokio::{net::TcpListener, sync::oneshot};

use crate::{
    accounts::Accounts, config::Config, grpc::AuthGrpc, password::PasswordHasherPool,
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
    let pool = db::prepare(
        &config.database_url,
        config.database_max_connections,
        &MIGRATOR,
    )
    .await
    .context("preparing the auth database")?;
    let redis = revocation::connect(&config.redis_url)
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
    let accounts = Accounts::new(
        pool,
        PasswordHasherPool::new(config.max_concurrent_hashes)?,
        Arc::new(issuer),
        RevocationList::new(redis, config.redis_prefix.clone()),
        config.refresh_token_ttl,
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthServiceServer<AuthGrpc>>().await;
    let mut routes = grpc::base_routes(health_service)?;
    routes.add_service(AuthServiceServer::new(AuthGrpc::new(accounts, verifier)));
    // Dropping `stop_relay` (this future cancelled) stops the relay too.
    let (stop_relay, relay_stopped) = oneshot::channel::<()>();
    let relay = tokio::spawn(relay.run(async move {
        let _ = relay_stopped.await;
    }));
    let served = grpc::serve(listener, routes.routes(), shutdown).await;
    let _ = stop_relay.send(());
    let _ = relay.await;
    served?;
    Ok(())
}
