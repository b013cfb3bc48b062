//! Settings of the gateway, from the environment.

use std::{net::SocketAddr, time::Duration};

use axum::http::HeaderValue;
use quill_platform::{
    authn::AuthnConfig,
    config::{ConfigError, ensure, env_millis, env_opt, env_or, env_secs},
};

/// Front-end dev servers' usual origins (Create React App, the RealWorld
/// Angular and Vue apps, Vite, a second local server), as `localhost` and
/// `127.0.0.1`.
const DEV_ORIGINS: &str = "http://localhost:3000,http://localhost:4100,\
    http://localhost:5173,http://localhost:8080,http://127.0.0.1:3000,\
    http://127.0.0.1:4100,http://127.0.0.1:5173,http://127.0.0.1:8080";

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
            listen: env_or(
                "GATEWAY_LISTEN",
                "127.0.0.1:8080".parse().expect("valid default"),
            )?,
            auth_url: env_or("AUTH_URL", "http://127.0.0.1:50051".to_owned())?,
            content_url: env_or("CONTENT_URL", "http://127.0.0.1:50052".to_owned())?,
            notification_url: env_or("NOTIFICATION_URL", "http://127.0.0.1:50053".to_owned())?,
            authn: AuthnConfig::from_env()?,
            rpc_deadline: env_millis("GATEWAY_RPC_DEADLINE_MS", 5_000)?,
            max_body_bytes: env_or("GATEWAY_MAX_BODY_BYTES", 1024 * 1024)?,
            trusted_proxies: trusted_proxies()?,
            header_read_timeout: env_secs("GATEWAY_HEADER_READ_TIMEOUT_SECS", 10)?,
            metrics_listen: metrics_listen()?,
            cors_origins: {
                let value = env_or("GATEWAY_CORS_ORIGINS", DEV_ORIGINS.to_owned())?;
                CorsOrigins::parse(&value).map_err(|reason| ConfigError {
                    name: "GATEWAY_CORS_ORIGINS".into(),
                    value,
                    reason,
                })?
            },
            stream_recheck: env_secs("GATEWAY_STREAM_RECHECK_SECS", 30)?,
        };
        ensure(
            !config.stream_recheck.is_zero(),
            "GATEWAY_STREAM_RECHECK_SECS",
            0,
            "must be at least 1",
        )?;
        ensure(
            !config.rpc_deadline.is_zero(),
            "GATEWAY_RPC_DEADLINE_MS",
            0,
            "must be positive",
        )?;
        ensure(
            !config.header_read_timeout.is_zero(),
            "GATEWAY_HEADER_READ_TIMEOUT_SECS",
            0,
            "must be at least 1",
        )?;
        for (name, url) in [
            ("AUTH_URL", &config.auth_url),
            ("CONTENT_URL", &config.content_url),
            ("NOTIFICATION_URL", &config.notification_url),
        ] {
            ensure(
                url.starts_with("http://") || url.starts_with("https://"),
                name,
                url,
                "must be an http:// or https:// URL",
            )?;
        }
        Ok(config)
    }
}

/// `GATEWAY_TRUSTED_PROXIES`, or the older `GATEWAY_TRUST_FORWARDED_FOR=true`
/// read as one proxy (what it was meant for: the one Ingress controller).
fn trusted_proxies() -> Result<usize, ConfigError> {
    if env_opt("GATEWAY_TRUSTED_PROXIES").is_none() && env_or("GATEWAY_TRUST_FORWARDED_FOR", false)?
    {
        tracing::warn!(
            "GATEWAY_TRUST_FORWARDED_FOR is deprecated; read as GATEWAY_TRUSTED_PROXIES=1"
        );
        return Ok(1);
    }
    env_or("GATEWAY_TRUSTED_PROXIES", 0)
}

/// Unset means the default; empty or `0` turns the listener off (so an
/// empty value cannot mean the default, unlike other settings).
fn metrics_listen() -> Result<Option<SocketAddr>, ConfigError> {
    let value = std::env::var("GATEWAY_METRICS_LISTEN").unwrap_or_else(|_| "127.0.0.1:9100".into());
    let value = value.trim();
    if value.is_empty() || value == "0" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e: std::net::AddrParseError| ConfigError {
            name: "GATEWAY_METRICS_LISTEN".into(),
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_a_list_or_an_explicit_star() {
        assert_eq!(CorsOrigins::parse(" * "), Ok(CorsOrigins::Any));
        let CorsOrigins::List(defaults) = CorsOrigins::parse(DEV_ORIGINS).unwrap() else {
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
