//! Settings of the gateway, from the environment.

use std::{net::SocketAddr, time::Duration};

use crate::images::StoreOptions;
use axum::http::HeaderValue;
use quill_platform::{
    authn::AuthnConfig,
    config::{ConfigError, ensure_upstream_urls},
    metrics::optional_listen,
    rate_limit::Limit,
    settings::{AUTH_URL, CONTENT_URL, SHUTDOWN_DELAY_SECS},
};

quill_platform::settings! {
    ALL;
    /// Where the REST API listens.
    GATEWAY_LISTEN = "127.0.0.1:8080";
    /// Where notification serves gRPC; as `AUTH_URL`.
    NOTIFICATION_URL = "http://127.0.0.1:50053";
    /// The deadline sent with every gRPC call, in milliseconds.
    GATEWAY_RPC_DEADLINE_MS = "5000";
    /// The largest request body accepted, in bytes.
    GATEWAY_MAX_BODY_BYTES = "1048576";
    /// Proxy hops in front of the gateway that append to `X-Forwarded-For`;
    /// the client address (rate-limit key, session list) is the entry that
    /// many places from the right; 0 ignores the header.
    GATEWAY_TRUSTED_PROXIES = "0";
    /// Deprecated: `true` means `GATEWAY_TRUSTED_PROXIES=1`.
    GATEWAY_TRUST_FORWARDED_FOR = "false";
    /// A connection that has not sent a whole request head within this many
    /// seconds is closed (slowloris).
    GATEWAY_HEADER_READ_TIMEOUT_SECS = "10";
    /// Comma-separated browser origins allowed to call the API; `*` alone
    /// allows any (never with credentials). The default: front-end dev
    /// servers' usual origins (Create React App, the RealWorld Angular and
    /// Vue apps, Vite, a second local server).
    GATEWAY_CORS_ORIGINS = "http://localhost:3000,http://localhost:4100,\
        http://localhost:5173,http://localhost:8080,http://127.0.0.1:3000,\
        http://127.0.0.1:4100,http://127.0.0.1:5173,http://127.0.0.1:8080";
    /// The admin listener serving `/metrics` (empty or `0` disables it); the
    /// public listener never serves it.
    GATEWAY_METRICS_LISTEN = "127.0.0.1:9100";
    /// How often an open notification stream re-checks its session.
    GATEWAY_STREAM_RECHECK_SECS = "30";
    /// How long a user's own account (`GET /api/user`) is cached in Redis,
    /// in seconds; 0 turns the cache off. Auth makes an entry stale as the
    /// account changes: this only bounds one whose invalidation was lost.
    GATEWAY_ACCOUNT_CACHE_TTL_SECS = "60";
    /// Where uploaded images are stored: a directory (created if missing,
    /// relative to the working directory) or a URL, `file:///srv/uploads`
    /// or `s3://bucket/prefix` (credentials, region and endpoint from the
    /// standard `AWS_*` variables). Every gateway replica must see the same
    /// store: a directory only serves one host.
    GATEWAY_UPLOADS_URL = "data/uploads";
    /// The largest image `POST /api/uploads` accepts, in bytes.
    GATEWAY_MAX_UPLOAD_BYTES = "5242880";
    /// Upload attempts one user may make per rate-limit window (refused
    /// ones count: they cost the reading too).
    GATEWAY_UPLOAD_RATE_LIMIT = "30";
    /// How long an upload may take, body included, in seconds (other
    /// requests: twice `GATEWAY_RPC_DEADLINE_MS` and a second).
    GATEWAY_UPLOAD_TIMEOUT_SECS = "120";
    /// The API's public base URL (`https://api.example.com`), from which an
    /// upload's absolute URL is written; empty: `http://` and the
    /// request's `Host`.
    GATEWAY_PUBLIC_URL = "";
    /// The image shown for users who have none (`image` of users and
    /// profiles); empty: `null`, as RealWorld has it.
    GATEWAY_DEFAULT_AVATAR_URL = "";
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub auth_url: String,
    pub content_url: String,
    pub notification_url: String,
    /// Redis (session cache) and the service secret, as every process.
    pub authn: AuthnConfig,
    /// Deadline sent with every gRPC call.
    pub rpc_deadline: Duration,
    pub max_body_bytes: usize,
    /// How many proxies in front of the gateway append the address they
    /// see to `X-Forwarded-For` (`GATEWAY_TRUSTED_PROXIES`, 0: the header is
    /// ignored). Entries left of theirs are the client's to choose, so the
    /// client address is the one the outermost trusted proxy appended.
    pub trusted_proxies: usize,
    /// The longest a client may take to send a request's head
    /// (`GATEWAY_HEADER_READ_TIMEOUT_SECS`).
    pub header_read_timeout: Duration,
    /// Where `/metrics` is served (`GATEWAY_METRICS_LISTEN`); never on the
    /// public listener. `None` (empty or `0`) serves it nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Which browser origins may call the API (`GATEWAY_CORS_ORIGINS`).
    pub cors_origins: CorsOrigins,
    /// How often an open notification stream re-checks that its session is
    /// live (logout, ban, password change end it).
    /// `GATEWAY_STREAM_RECHECK_SECS`, 30 by default.
    pub stream_recheck: Duration,
    /// `GATEWAY_ACCOUNT_CACHE_TTL_SECS`: zero turns the cache of users' own
    /// accounts off.
    pub account_cache_ttl: Duration,
    /// How long the gateway keeps answering, `/readyz` 503, once shutdown
    /// begins (`SHUTDOWN_DELAY_SECS`), before it stops listening.
    pub drain_delay: Duration,
    pub uploads: UploadsConfig,
}

#[derive(Debug, Clone)]
pub struct UploadsConfig {
    /// `GATEWAY_UPLOADS_URL`: a directory or an object-store URL.
    pub location: String,
    /// The `AWS_*` variables, for an `s3://` location.
    pub store_options: StoreOptions,
    /// `GATEWAY_MAX_UPLOAD_BYTES`.
    pub max_bytes: usize,
    /// `GATEWAY_UPLOAD_RATE_LIMIT` per `RATE_LIMIT_WINDOW_SECS`.
    pub rate_limit: Limit,
    /// `GATEWAY_UPLOAD_TIMEOUT_SECS`.
    pub timeout: Duration,
    /// `GATEWAY_PUBLIC_URL`, without a trailing slash; `None`: from `Host`.
    pub public_url: Option<String>,
    /// `GATEWAY_DEFAULT_AVATAR_URL`; `None`: `null`.
    pub default_avatar: Option<String>,
}

impl UploadsConfig {
    fn from_env() -> Result<Self, ConfigError> {
        let config = Self {
            location: GATEWAY_UPLOADS_URL.get()?,
            store_options: StoreOptions::from_env(),
            max_bytes: GATEWAY_MAX_UPLOAD_BYTES.get()?,
            rate_limit: Limit::from_env(&GATEWAY_UPLOAD_RATE_LIMIT)?,
            timeout: GATEWAY_UPLOAD_TIMEOUT_SECS.secs()?,
            public_url: GATEWAY_PUBLIC_URL
                .opt()?
                .and_then(non_empty)
                .map(|url| url.trim_end_matches('/').to_owned()),
            default_avatar: GATEWAY_DEFAULT_AVATAR_URL.opt()?.and_then(non_empty),
        };
        GATEWAY_MAX_UPLOAD_BYTES.ensure(config.max_bytes > 0, 0, "must be positive")?;
        GATEWAY_UPLOAD_TIMEOUT_SECS.ensure(!config.timeout.is_zero(), 0, "must be at least 1")?;
        if let Some(url) = &config.public_url {
            GATEWAY_PUBLIC_URL.ensure(
                url.starts_with("http://") || url.starts_with("https://"),
                url,
                "must be an http:// or https:// URL",
            )?;
        }
        Ok(config)
    }
}

fn non_empty(value: String) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin, never with credentials.
    Any,
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// `*` alone, or comma-separated `scheme://host[:port]` origins (what
    /// browsers send in `Origin`: no path, no trailing slash).
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let mut origins = Vec::new();
        for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .ok_or_else(|| format!("{origin:?} is not an http:// or https:// origin"))?;
            if rest.is_empty() || rest.contains(['/', '*', ' ']) {
                return Err(format!(
                    "{origin:?} is not an origin (scheme://host[:port], no path; `*` only alone)"
                ));
            }
            origins.push(
                HeaderValue::from_str(origin).map_err(|_| format!("{origin:?} is not ASCII"))?,
            );
        }
        if origins.is_empty() {
            return Err("names no origin".to_owned());
        }
        Ok(Self::List(origins))
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self {
            listen: GATEWAY_LISTEN.get()?,
            auth_url: AUTH_URL.get()?,
            content_url: CONTENT_URL.get()?,
            notification_url: NOTIFICATION_URL.get()?,
            authn: AuthnConfig::from_env()?,
            rpc_deadline: GATEWAY_RPC_DEADLINE_MS.millis()?,
            max_body_bytes: GATEWAY_MAX_BODY_BYTES.get()?,
            trusted_proxies: trusted_proxies()?,
            header_read_timeout: GATEWAY_HEADER_READ_TIMEOUT_SECS.secs()?,
            metrics_listen: optional_listen(
                &GATEWAY_METRICS_LISTEN,
                GATEWAY_METRICS_LISTEN.default,
            )?,
            cors_origins: {
                let value: String = GATEWAY_CORS_ORIGINS.get()?;
                CorsOrigins::parse(&value)
                    .map_err(|reason| GATEWAY_CORS_ORIGINS.invalid(&value, reason))?
            },
            stream_recheck: GATEWAY_STREAM_RECHECK_SECS.secs()?,
            account_cache_ttl: GATEWAY_ACCOUNT_CACHE_TTL_SECS.secs()?,
            drain_delay: SHUTDOWN_DELAY_SECS.secs()?,
            uploads: UploadsConfig::from_env()?,
        };
        GATEWAY_STREAM_RECHECK_SECS.ensure(
            !config.stream_recheck.is_zero(),
            0,
            "must be at least 1",
        )?;
        GATEWAY_RPC_DEADLINE_MS.ensure(!config.rpc_deadline.is_zero(), 0, "must be positive")?;
        GATEWAY_HEADER_READ_TIMEOUT_SECS.ensure(
            !config.header_read_timeout.is_zero(),
            0,
            "must be at least 1",
        )?;
        ensure_upstream_urls(&AUTH_URL, &config.auth_url)?;
        ensure_upstream_urls(&CONTENT_URL, &config.content_url)?;
        ensure_upstream_urls(&NOTIFICATION_URL, &config.notification_url)?;
        Ok(config)
    }
}

/// `GATEWAY_TRUSTED_PROXIES`, or the older `GATEWAY_TRUST_FORWARDED_FOR=true`
/// read as one proxy (what it was meant for: the one Ingress controller).
fn trusted_proxies() -> Result<usize, ConfigError> {
    if GATEWAY_TRUSTED_PROXIES.value().is_none() && GATEWAY_TRUST_FORWARDED_FOR.get()? {
        tracing::warn!(
            "GATEWAY_TRUST_FORWARDED_FOR is deprecated; read as GATEWAY_TRUSTED_PROXIES=1"
        );
        return Ok(1);
    }
    GATEWAY_TRUSTED_PROXIES.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_a_list_or_an_explicit_star() {
        assert_eq!(CorsOrigins::parse(" * "), Ok(CorsOrigins::Any));
        let CorsOrigins::List(defaults) = CorsOrigins::parse(GATEWAY_CORS_ORIGINS.default).unwrap()
        else {
            panic!("the defaults are a list");
        };
        assert!(defaults.contains(&HeaderValue::from_static("http://localhost:4100")));
        assert!(defaults.contains(&HeaderValue::from_static("http://127.0.0.1:5173")));
        assert_eq!(
            CorsOrigins::parse("https://app.example.com, http://localhost:3000"),
            Ok(CorsOrigins::List(vec![
                HeaderValue::from_static("https://app.example.com"),
                HeaderValue::from_static("http://localhost:3000"),
            ]))
        );
        for bad in [
            "",
            ",",
            "app.example.com",
            "https://app.example.com/",
            "https://*.example.com",
            "*, https://app.example.com",
        ] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad:?}");
        }
    }
}
