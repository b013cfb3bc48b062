//! Wiring: database, auth (keys and the author read-model's source), the
//! gRPC server, the outbox relay publishing content's events and the
//! consumer applying auth's.

use std::{future::Future, str::FromStr, time::Duration};

use anyhow::Context;
use futures::FutureExt;
use quill_platform::{
    authn::ServiceAuth,
    db,
    events::{Consumer, OutboxRelay, catalog},
    grpc,
    rate_limit::RateLimiter,
    retry::with_backoff,
    service_identity::Service,
};
use quill_proto::content::v1::content_service_server::ContentServiceServer;
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Endpoint;

use crate::{
    authors::Authors,
    config::Config,
    cursor::CursorCodec,
    events::UserEvents,
    grpc::{ContentGrpc, WriteLimit},
    service::Content,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Creates the database if needed and applies the migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    db::prepare(&config.database_url, 2, &MIGRATOR).await?;
    Ok(())
}

/// Connection options of the service's pool. The list statements carry
/// optional filters as `($n IS NULL OR ...)`; planning them with their
/// actual parameters (custom plans) folds the unset ones away so each filter
/// uses its index, where a cached generic plan could not.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?.options([("plan_cache_mode", "force_custom_plan")]))
}

/// Creates the database if needed, connects and applies the migrations.
pub async fn prepare_database(config: &Config) -> anyhow::Result<PgPool> {
    db::create_database_if_missing(&config.database_url).await?;
    let options = connect_options(&config.database_url).context("CONTENT_DATABASE_URL")?;
    let pool = with_backoff("connecting to PostgreSQL", 10, || {
        PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
    })
    .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Runs the service on `listener` until `shutdown` resolves. The relay and
/// the consumer stop after the gRPC server has drained, so the events of the
/// last requests still go out; the consumer finishes what it holds.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = prepare_database(&config)
        .await
        .context("preparing the content database")?;
    let auth = Endpoint::from_shared(config.auth_url.clone())
        .with_context(|| format!("AUTH_URL={} is not a valid URL", config.auth_url))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let identity = ServiceAuth::connect(Service::Content, &config.authn, auth.clone())
        .await
        .map_err(|e| anyhow::anyhow!("authentication against {}: {e}", config.auth_url))?;
    let events = &config.events;
    let relay = OutboxRelay::new(pool.clone(), &events.amqp_url, &events.exchange)
        .poll_interval(events.relay_poll_interval)
        .declare_queues(catalog::all(events, &config.events_queue_prefix));
    let consumer = Consumer::new(
        pool.clone(),
        &events.amqp_url,
        catalog::content(events, &config.events_queue_prefix),
        UserEvents,
    )
    .prefetch(events.prefetch);
    let content = Content::new(
        pool.clone(),
        Authors::new(pool, grpc::client(auth, &identity.credentials)),
        CursorCodec::new(config.cursor_secret.as_bytes()),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ContentServiceServer<ContentGrpc>>()
        .await;
    let mut routes = grpc::base_routes(health_service)?;
    let writes = WriteLimit {
        limiter: RateLimiter::new(identity.redis.clone(), config.authn.redis_prefix.clone()),
        limit: config.writes_per_user,
    };
    routes.add_service(quill_platform::message_limits!(ContentServiceServer::new(
        ContentGrpc::new(content, writes)
    )));
    // Dropping `stop_events` (this future cancelled) stops them too.
    let (stop_events, events_stopped) = oneshot::channel::<()>();
    let events_stopped = async move {
        let _ = events_stopped.await;
    }
    .boxed()
    .shared();
    let relay = tokio::spawn(relay.run(events_stopped.clone()));
    let consumer = tokio::spawn(consumer.run(events_stopped));
    let served = grpc::serve(
        listener,
        routes.routes(),
        identity.authn,
        grpc::MAX_CONCURRENT_STREAMS,
        shutdown,
    )
    .await;
    let _ = stop_events.send(());
    let _ = tokio::join!(relay, consumer);
    served?;
    Ok(())
}
