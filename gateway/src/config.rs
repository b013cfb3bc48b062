//! Settings of the gateway, from the environment.

use std::{net::SocketAddr, time::Duration};

use quill_platform::config::{ConfigError, ensure, env_millis, env_or, env_secs};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub auth_url: String,
    pub content_url: String,
    pub notification_url: String,
    pub redis_url: String,
    /// Namespaces Redis keys; must match the auth service's.
    pub redis_prefix: String,
    /// Deadline sent with every gRPC call.
    pub rpc_deadline: Duration,
    pub max_body_bytes: usize,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy
    /// that sets it; otherwise clients could pick their own rate-limit key).
    pub trust_forwarded_for: bool,
    pub rate_limits: RateLimits,
    /// How often an open notification stream re-checks that its session is
    /// not revoked (logout, ban, password change); the stream ends when it
    /// is. `GATEWAY_STREAM_RECHECK_SECS`, 30 by default.
    pub stream_recheck: Duration,
}

/// Requests allowed per window, per client IP and per account.
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub window: Duration,
    pub login_per_ip: u32,
    pub login_per_account: u32,
    pub register_per_ip: u32,
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
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned())?,
            redis_prefix: env_or("REDIS_PREFIX", "quill:".to_owned())?,
            rpc_deadline: env_millis("GATEWAY_RPC_DEADLINE_MS", 5_000)?,
            max_body_bytes: env_or("GATEWAY_MAX_BODY_BYTES", 1024 * 1024)?,
            trust_forwarded_for: env_or("GATEWAY_TRUST_FORWARDED_FOR", false)?,
            rate_limits: RateLimits {
                window: env_secs("RATE_LIMIT_WINDOW_SECS", 60)?,
                login_per_ip: env_or("RATE_LIMIT_LOGIN_PER_IP", 30)?,
                login_per_account: env_or("RATE_LIMIT_LOGIN_PER_ACCOUNT", 10)?,
                register_per_ip: env_or("RATE_LIMIT_REGISTER_PER_IP", 20)?,
            },
            stream_recheck: env_secs("GATEWAY_STREAM_RECHECK_SECS", 30)?,
        };
        ensure(
            !config.rate_limits.window.is_zero(),
            "RATE_LIMIT_WINDOW_SECS",
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
            !config.stream_recheck.is_zero(),
            "GATEWAY_STREAM_RECHECK_SECS",
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
