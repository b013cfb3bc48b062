//! Wiring: database, auth (keys and the author read-model's source), the
//! gRPC server, the outbox relay publishing content's events and the
//! consumer applying auth's.

use anyhow::Context;
use quill_events::{Consumer, OutboxRelay, Retention, catalog};
use quill_platform::{
    authn::ServiceAuth, balance, grpc, rate_limit::RateLimiter, service_identity::Service as Caller,
};
use quill_proto::content::v1::content_service_server::ContentServiceServer;
use quill_server::{GrpcServer, Service, Serving, db};
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;

use crate::{
    authors::Authors,
    config::{CUSTOM_PLANS, Config, GENERIC_PLANS},
    cursor::CursorCodec,
    events::UserEvents,
    grpc::{ContentGrpc, WriteLimit},
    read_cache::{RelayInvalidation, read_cache},
    service::Content as ContentUseCases,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The content service, as `quill_server` runs it.
pub struct Content;

impl Service for Content {
    type Config = Config;
    const NAME: &'static str = "quill-content";
    const METRICS_LISTEN: &'static str = "127.0.0.1:9102";
    const MIGRATOR: &'static Migrator = &MIGRATOR;

    /// The relay and the consumer stop after the gRPC server has drained, so
    /// the events of the last requests still go out; the consumer finishes
    /// what it holds.
    async fn run(config: Config, serving: Serving) -> anyhow::Result<()> {
        let planning = |(setting, mode)| {
            config
                .server
                .database
                .clone()
                .with_session_setting(setting, mode)
        };
        let pool = db::prepare(&planning(GENERIC_PLANS), &MIGRATOR)
            .await
            .context("preparing the content database")?;
        let database_ready = db::probe(pool.clone());
        let lists = db::connect(&planning(CUSTOM_PLANS))
            .await
            .context("connecting the lists' pool")?;
        let auth = balance::to_auth(&config.auth_url)?;
        let identity = ServiceAuth::connect(Caller::Content, &config.authn, auth.clone())
            .await
            .map_err(|e| anyhow::anyhow!("authentication against {}: {e}", config.auth_url))?;
        let cache = read_cache(
            identity.redis.clone(),
            &config.authn.redis_prefix,
            config.cache_ttl,
        );
        let events = &config.events;
        let amqp_url = events.amqp_url.expose_secret();
        // Ended follows answer fan-outs of events as old as any still
        // delivered, which the inbox's retention already bounds.
        let retention = Retention::backbone(
            pool.clone(),
            events.retention,
            events.retention_interval,
        )
        .keep("past_follows", "unfollowed_at", events.retention);
        let relay = OutboxRelay::new(pool.clone(), amqp_url, &events.exchange)
            .poll_interval(events.relay_poll_interval)
            .events_per_message(events.relay_events_per_message)
            .declare_queues(catalog::all(events, &config.events_queue_prefix))
            .on_published(RelayInvalidation(cache.clone()));
        let consumer = Consumer::new(
            pool.clone(),
            amqp_url,
            catalog::content(events, &config.events_queue_prefix),
            UserEvents {
                cache: cache.clone(),
            },
        )
        .prefetch(events.prefetch);
        let content = ContentUseCases::new(
            pool.clone(),
            lists,
            Authors::new(
                pool,
                grpc::client(auth, &identity.credentials),
                cache.clone(),
            ),
            CursorCodec::new(config.cursor_secret.expose_secret().as_bytes()),
            cache,
        );
        let writes = WriteLimit {
            limiter: RateLimiter::new(identity.redis.clone(), config.authn.redis_prefix.clone()),
            limit: config.writes_per_user,
        };

        let mut server = GrpcServer::new();
        server.add_service(quill_platform::message_limits!(ContentServiceServer::new(
            ContentGrpc::new(content, writes)
        )));
        server.background().spawn(|stop| relay.run(stop));
        server.background().spawn(|stop| consumer.run(stop));
        server.background().spawn(|stop| retention.run(stop));
        server.depends_on("database", database_ready);
        server.serve(serving, identity.authn).await?;
        Ok(())
    }
}
