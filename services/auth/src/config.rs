//! Settings of the auth service, from the environment.

use std::{net::SocketAddr, time::Duration};

use quill_platform::{
    config::{ConfigError, ensure, env_opt, env_or, env_secs},
    events::EventsConfig,
};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: String,
    /// Namespaces Redis keys; the gateway must use the same prefix.
    pub redis_prefix: String,
    /// PKCS#8 PEM of the Ed25519 signing key. Generated when absent (dev only).
    pub signing_key_pem: Option<String>,
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
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let signing_key_pem = match env_opt("AUTH_JWT_PRIVATE_KEY_FILE") {
            Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| ConfigError {
                name: "AUTH_JWT_PRIVATE_KEY_FILE".into(),
                value: path,
                reason: e.to_string(),
            })?),
            None => env_opt("AUTH_JWT_PRIVATE_KEY"),
        };
        let config = Self {
            listen: env_or(
                "AUTH_LISTEN",
                "127.0.0.1:50051".parse().expect("valid default"),
            )?,
            database_url: env_or(
                "AUTH_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/quill_auth".to_owned(),
            )?,
            database_max_connections: env_or("AUTH_DATABASE_MAX_CONNECTIONS", 10)?,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned())?,
            redis_prefix: env_or("REDIS_PREFIX", "quill:".to_owned())?,
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
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
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
