//! Wiring: database, auth (token keys), content (follower fan-out), the
//! event consumer, the LISTEN connection for live pushes, the mail sender,
//! and the gRPC server.

use std::sync::Arc;

use anyhow::Context;
use quill_events::{Consumer, Retention};
use quill_platform::{authn::ServiceAuth, balance, grpc, service_identity::Service as Caller};
use quill_proto::notification::v1::notification_service_server::NotificationServiceServer;
use quill_server::{GrpcServer, Service, Serving, db};
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use tokio::sync::Notify;

use crate::{
    config::Config,
    events::NotificationEvents,
    grpc::NotificationGrpc,
    inbox::Inbox,
    live::{Hub, Listener},
    mail::MailSender,
    repo::notifications::Announce,
    watching::Watching,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The notification service, as `quill_server` runs it.
pub struct Notification;

impl Service for Notification {
    type Config = Config;
    const NAME: &'static str = "quill-notification";
    const METRICS_LISTEN: &'static str = "127.0.0.1:9103";
    const MIGRATOR: &'static Migrator = &MIGRATOR;

    /// At shutdown live streams end at once; the consumer finishes and acks
    /// what it holds, the mail sender its batch, once the server has drained.
    async fn run(config: Config, serving: Serving) -> anyhow::Result<()> {
        let pool = db::prepare(&config.server.database, &MIGRATOR)
            .await
            .context("preparing the notification database")?;
        let database_ready = db::probe(pool.clone());
        let auth = balance::to_auth(&config.auth_url)?;
        let content = balance::to_content(&config.content_url)?;
        let identity = ServiceAuth::connect(Caller::Notification, &config.authn, auth)
            .await
            .map_err(|e| anyhow::anyhow!("authentication against {}: {e}", config.auth_url))?;
        let content = grpc::client(content, &identity.credentials);

        let mut server =
            GrpcServer::new().max_concurrent_streams(config.streams.http2_max_concurrent_streams());
        let hub = Hub::new(config.streams, serving.shutdown.child_token());
        let mail_wakeup = Arc::new(Notify::new());
        let live = Listener::connect(pool.clone(), hub.clone(), Arc::clone(&mail_wakeup))
            .await
            .context("listening for notifications on PostgreSQL")?;
        server.background().spawn(|stop| live.run(stop));
        let watching = Watching::new(pool.clone(), hub.clone());
        server.background().spawn(|stop| watching.clone().run(stop));
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
                server.background().spawn(|stop| sender.run(stop));
            }
            None => tracing::warn!("SMTP_URL is not set: email is disabled, in-app only"),
        }
        let handler = NotificationEvents::new(
            content,
            config.fanout_batch,
            config.smtp.is_some(),
            hub.clone(),
            if config.announce_all {
                Announce::All
            } else {
                Announce::Watched
            },
        );
        let consumer = Consumer::new(
            pool.clone(),
            config.events.amqp_url.expose_secret(),
            config.topology(),
            handler,
        )
        .prefetch(config.events.prefetch);
        server.background().spawn(|stop| consumer.run(stop));
        let retention = Retention::backbone(
            pool.clone(),
            config.events.retention,
            config.events.retention_interval,
        )
        .keep("outbox_mail", "sent_at", config.mail_retention)
        .keep("outbox_mail", "failed_at", config.mail_retention);
        server.background().spawn(|stop| retention.run(stop));
        server.add_service(quill_platform::message_limits!(
            NotificationServiceServer::new(NotificationGrpc::new(
                Inbox::new(pool),
                hub,
                watching,
                identity.authn.clone(),
                config.stream_recheck,
            ))
        ));
        server.depends_on("database", database_ready);
        server.serve(serving, identity.authn).await?;
        Ok(())
    }
}
