//! Wiring: database, Redis, keys, the gRPC server, and the outbox relay
//! publishing auth's events.

use std::sync::Arc;

use anyhow::Context;
use quill_events::{OutboxRelay, Retention, catalog};
use quill_platform::{
    account_cache,
    authn::Authenticator,
    rate_limit::RateLimiter,
    service_identity::{ServiceSecret, ServiceVerifier},
    sessions::{self, Sessions},
    token::TokenVerifier,
};
use quill_proto::auth::v1::auth_service_server::AuthServiceServer;
use quill_server::{GrpcServer, Service, Serving, db};
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;

use crate::{
    accounts::{Accounts, AccountsParts, DbSessionSource},
    config::Config,
    grpc::AuthGrpc,
    login_guard::LoginGuard,
    password::PasswordHasherPool,
    tokens::AccessTokenIssuer,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The auth service, as `quill_server` runs it.
pub struct Auth;

impl Service for Auth {
    type Config = Config;
    const NAME: &'static str = "quill-auth";
    const METRICS_LISTEN: &'static str = "127.0.0.1:9101";
    const MIGRATOR: &'static Migrator = &MIGRATOR;

    /// The outbox relay stops after the gRPC server has drained, so the
    /// events of the last requests still go out.
    async fn run(config: Config, serving: Serving) -> anyhow::Result<()> {
        let service_secret = ServiceSecret::required(config.authn.service_secret.as_ref())?;
        let pool = db::prepare(&config.server.database, &MIGRATOR)
            .await
            .context("preparing the auth database")?;
        let database_ready = db::probe(pool.clone());
        let redis = sessions::connect(config.authn.redis_url.expose_secret())
            .await
            .context("connecting to Redis")?;
        let issuer = AccessTokenIssuer::new(
            config
                .signing_key_pem
                .as_ref()
                .map(|pem| pem.expose_secret()),
            config.issuer.clone(),
            config.audience.clone(),
            config.access_token_ttl,
        )
        .context("AUTH_JWT_PRIVATE_KEY")?
        .publishing(config.published_keys.clone());
        let keys = issuer.public_keys();
        let verifier = TokenVerifier::new(
            keys.iter()
                .map(|key| (key.kid.as_str(), key.public_key_pem.as_str())),
            &config.issuer,
            &config.audience,
        )?;
        let retention = Retention::backbone(
            pool.clone(),
            config.events.retention,
            config.events.retention_interval,
        );
        let relay = OutboxRelay::new(
            pool.clone(),
            config.events.amqp_url.expose_secret(),
            &config.events.exchange,
        )
        .poll_interval(config.events.relay_poll_interval)
        .events_per_message(config.events.relay_events_per_message)
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
                cached_accounts: account_cache::invalidator(
                    redis.clone(),
                    &config.authn.redis_prefix,
                ),
                guard: LoginGuard::new(
                    RateLimiter::new(redis, config.authn.redis_prefix.clone()),
                    config.limits.clone(),
                ),
                refresh_ttl: config.refresh_token_ttl,
                reauth_window: config.reauth_window,
            },
        );

        let mut server = GrpcServer::new();
        server.add_service(quill_platform::message_limits!(AuthServiceServer::new(
            AuthGrpc::new(accounts)
        )));
        server.background().spawn(|stop| relay.run(stop));
        server.background().spawn(|stop| retention.run(stop));
        server.depends_on("database", database_ready);
        server.serve(serving, authn).await?;
        Ok(())
    }
}
