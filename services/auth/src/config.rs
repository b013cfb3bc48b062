//! Settings of the auth service, from the environment.

use crate::tokens::PublishedKey;
use std::time::Duration;

use quill_events::EventsConfig;
use quill_platform::{
    authn::AuthnConfig,
    config::{ConfigError, Secret},
    rate_limit::Limit,
};
use quill_server::{ServerConfig, ServerSettings};

quill_platform::settings! {
    ALL;
    /// Where auth's gRPC server listens.
    AUTH_LISTEN = "127.0.0.1:50051";
    /// auth's database, created if missing (may carry a password).
    AUTH_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/quill_auth";
    /// Connections in auth's pool.
    AUTH_DATABASE_MAX_CONNECTIONS = "10";
    /// The PKCS#8 PEM Ed25519 key that signs access tokens
    /// (`openssl genpkey -algorithm ed25519`). Unset: a key generated per
    /// start, with a warning; set it in production.
    AUTH_JWT_PRIVATE_KEY = "";
    /// A file holding `AUTH_JWT_PRIVATE_KEY`; wins over the variable.
    AUTH_JWT_PRIVATE_KEY_FILE = "";
    /// More Ed25519 public keys (SPKI PEM blocks, one after another) to
    /// publish beside the signing key's, for rotation: the next key, before
    /// it signs; the previous one, until the last token it signed expires
    /// (the session lifetime, `AUTH_REFRESH_TOKEN_TTL_SECS`).
    AUTH_JWT_PUBLISHED_KEYS = "";
    /// The `iss` of access tokens.
    JWT_ISSUER = "quill-auth";
    /// The `aud` of access tokens.
    JWT_AUDIENCE = "quill";
    /// Access token lifetime in seconds (1 to 86400).
    AUTH_ACCESS_TOKEN_TTL_SECS = "900";
    /// Refresh token (session) lifetime in seconds.
    AUTH_REFRESH_TOKEN_TTL_SECS = "2592000";
    /// Password hashes computed at once (each takes 19 MiB and a core).
    AUTH_MAX_CONCURRENT_HASHES = "(number of cores)";
    /// How recent a password login must be to change the email or password
    /// without giving `currentPassword`.
    AUTH_REAUTH_WINDOW_SECS = "300";
    /// Registrations per client address per window.
    RATE_LIMIT_REGISTER_PER_IP = "20";
    /// Failed logins per (account, client address) per window.
    RATE_LIMIT_LOGIN_FAILURES_PER_CLIENT = "5";
    /// Failed logins per client address, over every account, per window.
    RATE_LIMIT_LOGIN_FAILURES_PER_IP = "30";
    /// Failed logins per account from every client per window; never
    /// applied to a client that signed in to the account before.
    RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT = "100";
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_LISTEN`, `AUTH_DATABASE_URL`, `AUTH_DATABASE_MAX_CONNECTIONS`.
    pub server: ServerConfig,
    /// Redis (session cache, rate limits) and the service secret.
    pub authn: AuthnConfig,
    /// PKCS#8 PEM of the Ed25519 signing key. Generated when absent (dev only).
    pub signing_key_pem: Option<Secret>,
    /// `AUTH_JWT_PUBLISHED_KEYS`, parsed.
    pub published_keys: Vec<PublishedKey>,
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
        let signing_key_pem = match AUTH_JWT_PRIVATE_KEY_FILE.value() {
            Some(path) => Some(Secret::from(
                std::fs::read_to_string(&path)
                    .map_err(|e| AUTH_JWT_PRIVATE_KEY_FILE.invalid(path, e.to_string()))?,
            )),
            None => AUTH_JWT_PRIVATE_KEY.secret(),
        };
        let config = Self {
            server: ServerConfig::from_env(&ServerSettings {
                listen: AUTH_LISTEN,
                database_url: AUTH_DATABASE_URL,
                database_max_connections: AUTH_DATABASE_MAX_CONNECTIONS,
            })?,
            authn: AuthnConfig::from_env()?,
            signing_key_pem,
            published_keys: match AUTH_JWT_PUBLISHED_KEYS.opt::<String>()? {
                Some(pems) => PublishedKey::parse_all(&pems)
                    .map_err(|e| AUTH_JWT_PUBLISHED_KEYS.invalid("(PEM)", e.to_string()))?,
                None => Vec::new(),
            },
            issuer: JWT_ISSUER.get()?,
            audience: JWT_AUDIENCE.get()?,
            access_token_ttl: AUTH_ACCESS_TOKEN_TTL_SECS.secs()?,
            refresh_token_ttl: AUTH_REFRESH_TOKEN_TTL_SECS.secs()?,
            max_concurrent_hashes: AUTH_MAX_CONCURRENT_HASHES
                .get_or(std::thread::available_parallelism().map_or(2, |n| n.get()))?,
            events: EventsConfig::from_env()?,
            events_queue_prefix: quill_events::config::EVENTS_QUEUE_PREFIX.text(),
            limits: AuthLimits::from_env()?,
            reauth_window: AUTH_REAUTH_WINDOW_SECS.secs()?,
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
        let access = self.access_token_ttl.as_secs();
        AUTH_ACCESS_TOKEN_TTL_SECS.ensure(
            (1..=86_400).contains(&access),
            access,
            "must be between 1 and 86400 seconds; access tokens are meant to be short-lived",
        )?;
        AUTH_REFRESH_TOKEN_TTL_SECS.ensure(
            self.refresh_token_ttl > self.access_token_ttl,
            self.refresh_token_ttl.as_secs(),
            "must be longer than the access token lifetime",
        )?;
        AUTH_MAX_CONCURRENT_HASHES.ensure(
            self.max_concurrent_hashes > 0,
            self.max_concurrent_hashes,
            "must be at least 1",
        )
    }
}

impl AuthLimits {
    fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            register_per_ip: Limit::from_env(&RATE_LIMIT_REGISTER_PER_IP)?,
            login_failures_per_client: Limit::from_env(&RATE_LIMIT_LOGIN_FAILURES_PER_CLIENT)?,
            login_failures_per_ip: Limit::from_env(&RATE_LIMIT_LOGIN_FAILURES_PER_IP)?,
            login_failures_per_account: Limit::from_env(&RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT)?,
        })
    }
}
