//! Wiring: database, auth (token keys), content (follower fan-out), the
//! event consumer, the LISTEN connection for live pushes, the mail sender,
//! and the gRPC server.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use futures::FutureExt;
use quill_platform::{authn::ServiceAuth, db, events::Consumer, grpc, service_identity::Service};
use quill_proto::notification::v1::notification_service_server::NotificationServiceServer;
use sqlx::migrate::Migrator;
use tokio::{net::TcpListener, sync::Notify};
use tonic::transport::{Channel, Endpoint};

use crate::{
    config::Config,
    events::NotificationEvents,
    grpc::NotificationGrpc,
    live::{Hub, Listener},
    mail::MailSender,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long background loops get to finish their work at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Creates the database if needed and applies the migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    db::prepare(&config.database_url, 2, &MIGRATOR).await?;
    Ok(())
}

fn lazy_channel(name: &str, url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{name}={url} is not a valid URL"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// Runs the service on `listener` until `shutdown` resolves, then drains:
/// live streams end, the consumer finishes and acks what it holds, the mail
/// sender finishes its batch.
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
    .context("preparing the notification database")?;
    let auth = lazy_channel("AUTH_URL", &config.auth_url)?;
    let content = lazy_channel("CONTENT_URL", &config.content_url)?;
    let identity = ServiceAuth::connect(Service::Notification, &config.authn, auth)
        .await
        .map_err(|e| anyhow::anyhow!("authentication against {}: {e}", config.auth_url))?;
    let content = grpc::client(content, &identity.credentials);
    let shutdown = shutdown.boxed().shared();

    let hub = Hub::new(config.streams);
    let mail_wakeup = Arc::new(Notify::new());
    let live = Listener::connect(pool.clone(), hub.clone(), Arc::clone(&mail_wakeup))
        .await
        .context("listening for notifications on PostgreSQL")?;
    let mut background = vec![tokio::spawn(live.run(shutdown.clone()))];
    background.push(tokio::spawn({
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        async move {
            shutdown.await;
            hub.close();
        }
    }));
    match &config.smtp {
        Some(smtp) => {
            let from = config.mail_from.parse().context("MAIL_FROM")?;
            let sender = MailSender::new(
                pool.clone(),
                smtp,
                from,
                mail_wakeup,
                config.mail_poll_interval,
                config.mail_max_attempts,
            );
            background.push(tokio::spawn(sender.run(shutdown.clone())));
        }
        None => tracing::warn!("SMTP_URL is not set: email is disabled, in-app only"),
    }
    let handler = NotificationEvents::new(content, config.fanout_batch, config.smtp.is_some());
    let consumer = Consumer::new(
        pool.clone(),
        config.events.amqp_url.clone(),
        config.topology(),
        handler,
    )
    .prefetch(config.events.prefetch);
    background.push(tokio::spawn(consumer.run(shutdown.clone())));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<NotificationServiceServer<NotificationGrpc>>()
        .await;
    let mut routes = grpc::base_routes(health_service)?;
    routes.add_service(quill_platform::message_limits!(
        NotificationServiceServer::new(NotificationGrpc::new(
            pool,
            hub,
            identity.authn.clone(),
            config.stream_recheck,
        ))
    ));
    let served = grpc::serve(
        listener,
        routes.routes(),
        identity.authn,
        config.streams.http2_max_concurrent_streams(),
        shutdown.clone(),
    )
    .await;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(background));
    if drained.await.is_err() {
        tracing::warn!("background work did not drain within {DRAIN_TIMEOUT:?}");
    }
    served?;
    Ok(())
}
