//! Event settings from the environment, with developer-machine defaults.

use std::time::Duration;

use quill_platform::config::{ConfigError, Secret, ensure, env_millis, env_opt, env_or};
use secrecy::ExposeSecret;

use crate::broker::Topology;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_EXCHANGE: &str = "quill.events";

#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// `AMQP_URL`: carries the broker's password.
    pub amqp_url: Secret,
    /// `EVENTS_EXCHANGE`: the topic exchange every event goes through.
    pub exchange: String,
    /// `EVENTS_PREFETCH`: unacked deliveries per consumer, handled concurrently.
    pub prefetch: u16,
    /// `EVENTS_MAX_ATTEMPTS`: handler runs before a message is parked in the DLQ.
    pub max_attempts: u32,
    /// `EVENTS_RETRY_DELAYS_MS`: comma-separated delays before retry 1, 2, ...;
    /// later retries reuse the last one.
    pub retry_delays: Vec<Duration>,
    /// `OUTBOX_POLL_INTERVAL_MS`: how often an idle relay looks for new rows.
    pub relay_poll_interval: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            amqp_url: DEFAULT_AMQP_URL.into(),
            exchange: DEFAULT_EXCHANGE.to_owned(),
            prefetch: 32,
            max_attempts: 5,
            retry_delays: [1, 10, 60].map(Duration::from_secs).to_vec(),
            relay_poll_interval: Duration::from_millis(200),
        }
    }
}

impl EventsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let amqp_url = quill_platform::config::env_secret("AMQP_URL").unwrap_or(defaults.amqp_url);
        ensure(
            amqp_url.expose_secret().starts_with("amqp://"),
            "AMQP_URL",
            "<redacted>",
            "must start with amqp:// (lapin is built without TLS)",
        )?;
        let exchange = env_or("EVENTS_EXCHANGE", defaults.exchange)?;
        let prefetch = env_or("EVENTS_PREFETCH", defaults.prefetch)?;
        ensure(
            prefetch > 0,
            "EVENTS_PREFETCH",
            prefetch,
            "must be at least 1",
        )?;
        let max_attempts = env_or("EVENTS_MAX_ATTEMPTS", defaults.max_attempts)?;
        ensure(
            max_attempts > 0,
            "EVENTS_MAX_ATTEMPTS",
            max_attempts,
            "must be at least 1",
        )?;
        let retry_delays = match env_opt("EVENTS_RETRY_DELAYS_MS") {
            None => defaults.retry_delays,
            Some(raw) => parse_delays(&raw).map_err(|reason| ConfigError {
                name: "EVENTS_RETRY_DELAYS_MS".into(),
                value: raw.clone(),
                reason,
            })?,
        };
        let relay_poll_interval = env_millis("OUTBOX_POLL_INTERVAL_MS", 200)?;
        Ok(Self {
            amqp_url,
            exchange,
            prefetch,
            max_attempts,
            retry_delays,
            relay_poll_interval,
        })
    }

    /// The topology of `queue`, the consuming service's queue, bound to the
    /// routing keys (topic patterns such as `user.*`) it handles.
    pub fn topology(&self, queue: &str, bindings: &[&str]) -> Topology {
        Topology {
            exchange: self.exchange.clone(),
            queue: queue.to_owned(),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            max_attempts: self.max_attempts,
            retry_delays: self.retry_delays.clone(),
        }
    }
}

fn parse_delays(raw: &str) -> Result<Vec<Duration>, String> {
    raw.split(',')
        .map(|part| {
            part.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("{part:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|delays| {
            if delays.is_empty() || delays.iter().any(Duration::is_zero) {
                Err("need at least one delay, none zero".into())
            } else {
                Ok(delays)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_in_milliseconds() {
        assert_eq!(
            parse_delays("100, 2000").unwrap(),
            vec![Duration::from_millis(100), Duration::from_secs(2)]
        );
        assert!(parse_delays("100,x").is_err());
        assert!(parse_delays("0").is_err());
    }
}
