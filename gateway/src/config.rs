//! Settings of the gateway, from the environment.

use std::{net::SocketAddr, time::Duration};

use quill_platform::{
    authn::AuthnConfig,
    config::{ConfigError, ensure, env_millis, env_or, env_secs},
};

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
    /// Take the client address from `X-Forwarded-For` (only behind a proxy
    /// that sets it; otherwise clients could pick their own rate-limit key).
    pub trust_forwarded_for: bool,
    /// How often an open notification stream re-checks that its session is
    /// live (logout, ban, password change end it).
    /// `GATEWAY_STREAM_RECHECK_SECS`, 30 by default.
    pub stream_recheck: Duration,
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
            trust_forwarded_for: env_or("GATEWAY_TRUST_FORWARDED_FOR", false)?,
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
