//! Settings of the auth service, from the environment.

use std::time::Duration;

use quill_events::EventsConfig;
use quill_platform::{
    authn::AuthnConfig,
    config::{ConfigError, Secret, ensure, env_or, env_secret, env_secs},
    rate_limit::Limit,
};
use quill_server::ServerConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_LISTEN`, `AUTH_DATABASE_URL`, `AUTH_DATABASE_MAX_CONNECTIONS`.
    pub server: ServerConfig,
    /// Redis (session cache, rate limits) and the service secret.
    pub authn: AuthnConfig,
    /// PKCS#8 PEM of the Ed25519 signing key. Generated when absent (dev only).
    pub signing_key_pem: Option<Secret>,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Upper bound on concurrent argon2 hashes (each takes 19 MiB and a core).
    pub max_concurrent_hashes: usize,
    /// Where the outbox relay publishes (`AMQP_URL`, `EVENTS_EXCHANGE`, ...).
    pub events: EventsConfig,
    /// `EVENTS_QUEUE_PREFIX`: prefixes the consumer queues the relay
    /// declares; empty in production, where they are named `content`...
    pub events_queue_prefix: String,
    pub limits: AuthLimits,
    /// How recent a password login must be to change the email or password
    /// without giving the current password (`AUTH_REAUTH_WINDOW_SECS`).
    pub reauth_window: Duration,
}

/// Rate limits of registration and login, enforced here so they hold for
/// calls through the gateway and straight to the gRPC port alike.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Registrations per client address.
    pub register_per_ip: Limit,
    /// Failed logins per (account, client address): tight, it is the
    /// guessing client's own budget.
    pub login_failures_per_client: Limit,
    /// Failed logins per client address, over every account (spraying).
    pub login_failures_per_ip: Limit,
    /// Failed logins per account from every client: loose, and never applied
    /// to a client that signed in to the account before.
    pub login_failures_per_account: Limit,
}

impl quill_server::ServiceConfig for Config {
    fn from_env() -> Result<Self, ConfigError> {
        let signing_key_pem = match quill_platform::config::env_opt("AUTH_JWT_PRIVATE_KEY_FILE") {
            Some(path) => Some(Secret::from(std::fs::read_to_string(&path).map_err(
                |e| ConfigError {
                    name: "AUTH_JWT_PRIVATE_KEY_FILE".into(),
                    value: path,
                    reason: e.to_string(),
                },
            )?)),
            None => env_secret("AUTH_JWT_PRIVATE_KEY"),
        };
        let config = Self {
            server: ServerConfig::from_env("AUTH", 50051)?,
            authn: AuthnConfig::from_env()?,
            signing_key_pem,
            issuer: env_or("JWT_ISSUER", "quill-auth".to_owned())?,
            audience: env_or("JWT_AUDIENCE", "quill".to_owned())?,
            access_token_ttl: env_secs("AUTH_ACCESS_TOKEN_TTL_SECS", 900)?,
            refresh_token_ttl: env_secs("AUTH_REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
            max_concurrent_hashes: env_or(
                "AUTH_MAX_CONCURRENT_HASHES",
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )?,
            events: EventsConfig::from_env()?,
            events_queue_prefix: env_or("EVENTS_QUEUE_PREFIX", String::new())?,
            limits: AuthLimits::from_env()?,
            reauth_window: env_secs("AUTH_REAUTH_WINDOW_SECS", 300)?,
        };
        config.validate()?;
        Ok(config)
    }

    fn server(&self) -> &ServerConfig {
        &self.server
    }
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.limits.register_per_ip.window.is_zero(),
            "RATE_LIMIT_WINDOW_SECS",
            0,
            "must be at least 1",
        )?;
        let access = self.access_token_ttl.as_secs();
        ensure(
            (1..=86_400).contains(&access),
            "AUTH_ACCESS_TOKEN_TTL_SECS",
            access,
            "must be between 1 and 86400 seconds; access tokens are meant to be short-lived",
        )?;
        ensure(
            self.refresh_token_ttl > self.access_token_ttl,
            "AUTH_REFRESH_TOKEN_TTL_SECS",
            self.refresh_token_ttl.as_secs(),
            "must be longer than the access token lifetime",
        )?;
        ensure(
            self.max_concurrent_hashes > 0,
            "AUTH_MAX_CONCURRENT_HASHES",
            self.max_concurrent_hashes,
            "must be at least 1",
        )
    }
}

impl AuthLimits {
    fn from_env() -> Result<Self, ConfigError> {
        let window = env_secs("RATE_LIMIT_WINDOW_SECS", 60)?;
        let limit = |name: &str, default: u32| -> Result<Limit, ConfigError> {
            Ok(Limit {
                limit: env_or(name, default)?,
                window,
            })
        };
        Ok(Self {
            register_per_ip: limit("RATE_LIMIT_REGISTER_PER_IP", 20)?,
            login_failures_per_client: limit("RATE_LIMIT_LOGIN_FAILURES_PER_CLIENT", 5)?,
            login_failures_per_ip: limit("RATE_LIMIT_LOGIN_FAILURES_PER_IP", 30)?,
            login_failures_per_account: limit("RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT", 100)?,
        })
    }
}
