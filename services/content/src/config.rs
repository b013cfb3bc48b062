//! Settings of the content service, from the environment.

use quill_events::{EventsConfig, config::EVENTS_QUEUE_PREFIX};
use quill_platform::{
    authn::AuthnConfig,
    config::{ConfigError, Secret, ensure_upstream_urls, is_production},
    rate_limit::Limit,
    settings::AUTH_URL,
};
use quill_server::{ServerConfig, ServerSettings};

quill_platform::settings! {
    ALL;
    /// Where content's gRPC server listens.
    CONTENT_LISTEN = "127.0.0.1:50052";
    /// content's database, created if missing (may carry a password).
    CONTENT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/quill_content";
    /// Connections in each of content's two pools (the second, for the
    /// statements with optional parts, plans every call for its
    /// parameters), opened as needed: at most twice this many.
    CONTENT_DATABASE_MAX_CONNECTIONS = "10";
    /// The HMAC key of pagination cursors, at least 16 bytes. Unset: a key
    /// generated per start (cursors then break at restart and across
    /// replicas), with a warning; production refuses to start without one
    /// of its own and refuses published example values.
    CONTENT_CURSOR_SECRET = "";
    /// Articles, comments, favorites and follows per user per window.
    RATE_LIMIT_WRITES_PER_USER = "300";
    /// How long a cached read (an article, a list, comment or feed page,
    /// the tags, a profile) stays in Redis; 0 turns the cache off. Writes
    /// make what they change stale at once: this bounds memory, and how
    /// long a lost invalidation (a crash after a commit, Redis down) can
    /// leave a stale answer.
    CONTENT_CACHE_TTL_SECS = "300";
}
use rand::{Rng, distributions::Alphanumeric};
use secrecy::ExposeSecret;

/// Secrets that are public: the constant earlier versions signed with when
/// none was set, and placeholders from the deployment files and docs.
/// Whoever knows one can forge cursors.
const KNOWN_WEAK_CURSOR_SECRETS: &[&str] = &[
    "quill-content-dev-cursor-secret-change-me",
    "CHANGE_ME",
    "compose-only-cursor-secret-not-for-production",
    "change-me",
    "changeme",
    "secret",
];

#[derive(Debug, Clone)]
pub struct Config {
    /// `CONTENT_LISTEN`, `CONTENT_DATABASE_URL`,
    /// `CONTENT_DATABASE_MAX_CONNECTIONS`.
    pub server: ServerConfig,
    /// Where auth serves gRPC: public keys, and author profiles on a miss.
    pub auth_url: String,
    /// Key of the HMAC that makes pagination cursors tamper-evident.
    pub cursor_secret: Secret,
    /// The broker: content consumes `user.*` and publishes its own events.
    pub events: EventsConfig,
    /// `EVENTS_QUEUE_PREFIX`: prefixes the queue names (empty in
    /// production, where content consumes queue `content`).
    pub events_queue_prefix: String,
    /// Redis (session cache, write limits) and the service secret.
    pub authn: AuthnConfig,
    /// Writes per user per window (`RATE_LIMIT_WRITES_PER_USER` per
    /// `RATE_LIMIT_WINDOW_SECS`).
    pub writes_per_user: Limit,
    /// `CONTENT_CACHE_TTL_SECS`: zero turns the read cache off.
    pub cache_ttl: std::time::Duration,
}

/// Set on the connections of content's second pool, where the statements
/// with optional parts run (see the module `repo`).
pub const CUSTOM_PLANS: (&str, &str) = ("plan_cache_mode", "force_custom_plan");

/// Set on the connections of the main pool, whose statements have no
/// optional parts: PostgreSQL would otherwise keep planning some of them
/// per call forever, as it does a statement with `= ANY($1)`, whose
/// custom plans (one array element) always look cheaper than the generic
/// one (ten) while costing twice as much time as the execution.
pub const GENERIC_PLANS: (&str, &str) = ("plan_cache_mode", "force_generic_plan");

impl quill_server::ServiceConfig for Config {
    fn from_env() -> Result<Self, ConfigError> {
        let cursor_secret = cursor_secret(CONTENT_CURSOR_SECRET.value(), is_production())?;
        let server = ServerConfig::from_env(&ServerSettings {
            listen: CONTENT_LISTEN,
            database_url: CONTENT_DATABASE_URL,
            database_max_connections: CONTENT_DATABASE_MAX_CONNECTIONS,
        })?;
        let config = Self {
            server,
            auth_url: AUTH_URL.get()?,
            cursor_secret,
            events: EventsConfig::from_env()?,
            events_queue_prefix: EVENTS_QUEUE_PREFIX.text(),
            authn: AuthnConfig::from_env()?,
            writes_per_user: Limit::from_env(&RATE_LIMIT_WRITES_PER_USER)?,
            cache_ttl: CONTENT_CACHE_TTL_SECS.secs()?,
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
        ensure_upstream_urls(&AUTH_URL, &self.auth_url)?;
        CONTENT_CURSOR_SECRET.ensure(
            self.cursor_secret.expose_secret().len() >= 16,
            "<redacted>",
            "must be at least 16 bytes",
        )
    }
}

/// The cursor signing key: the one set, or outside production a random one
/// per start (cursors then die with the process and differ between
/// replicas, fine on a developer machine). Production refuses to start
/// without a key of its own.
fn cursor_secret(set: Option<String>, production: bool) -> Result<Secret, ConfigError> {
    let refuse = |value: &str, reason: &str| CONTENT_CURSOR_SECRET.invalid(value, reason);
    match set {
        Some(secret)
            if production
                && KNOWN_WEAK_CURSOR_SECRETS
                    .iter()
                    .any(|weak| secret.trim().eq_ignore_ascii_case(weak)) =>
        {
            Err(refuse(
                "<redacted>",
                "is a published example value; set a random one in production \
                 (e.g. openssl rand -base64 32)",
            ))
        }
        Some(secret) => Ok(secret.into()),
        None if production => Err(refuse(
            "",
            "must be set in production (DEPLOYMENT_ENVIRONMENT=production); \
             e.g. openssl rand -base64 32",
        )),
        None => {
            tracing::warn!(
                "CONTENT_CURSOR_SECRET is not set: generated a throwaway cursor key; \
                 cursors stop working at restart and across replicas; set it in production"
            );
            Ok(rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(43)
                .map(char::from)
                .collect::<String>()
                .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_outside_production_is_a_fresh_random_key() {
        let first = cursor_secret(None, false).unwrap();
        let second = cursor_secret(None, false).unwrap();
        let (first, second) = (first.expose_secret(), second.expose_secret());
        assert!(first.len() >= 32);
        assert_ne!(first, second);
        assert!(!KNOWN_WEAK_CURSOR_SECRETS.contains(&first));
    }

    #[test]
    fn production_refuses_an_unset_or_published_key() {
        assert!(cursor_secret(None, true).is_err());
        for weak in KNOWN_WEAK_CURSOR_SECRETS {
            assert!(
                cursor_secret(Some((*weak).to_owned()), true).is_err(),
                "{weak}"
            );
        }
        assert!(
            cursor_secret(
                Some("Quill-Content-Dev-Cursor-Secret-Change-Me".into()),
                true
            )
            .is_err()
        );
        let own = "k3Q9v0Zr8yT1pWmA6sLdE2fHgJcXbN4u".to_owned();
        assert_eq!(
            cursor_secret(Some(own.clone()), true)
                .unwrap()
                .expose_secret(),
            own
        );
    }

    #[test]
    fn outside_production_any_set_key_is_used() {
        let dev = "quill-content-dev-cursor-secret-change-me".to_owned();
        assert_eq!(
            cursor_secret(Some(dev.clone()), false)
                .unwrap()
                .expose_secret(),
            dev
        );
    }
}
