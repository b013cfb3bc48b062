//! Event settings from the environment, with developer-machine defaults.

use std::time::Duration;

use quill_platform::config::{ConfigError, Secret};
use secrecy::ExposeSecret;

use crate::broker::Topology;

quill_platform::settings! {
    ALL;
    /// The broker (carries its password). `amqp://` only: lapin is built
    /// without TLS.
    AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f";
    /// The topic exchange every event goes through.
    EVENTS_EXCHANGE = "quill.events";
    /// Prefixes the queue names, so a second system can share a broker
    /// (empty in production, where the queues are `content.v2`, `notification.v2`).
    EVENTS_QUEUE_PREFIX = "";
    /// Unacked deliveries per consumer, handled concurrently.
    EVENTS_PREFETCH = "32";
    /// Handler runs before a message is parked in the dead-letter queue.
    EVENTS_MAX_ATTEMPTS = "5";
    /// Comma-separated delays before retry 1, 2, ...; later retries reuse
    /// the last one.
    EVENTS_RETRY_DELAYS_MS = "1000,10000,60000";
    /// How often an idle outbox relay looks for rows it was not woken for.
    OUTBOX_POLL_INTERVAL_MS = "200";
    /// Events of one type an outbox relay sends in one message, at most: the
    /// broker's cost is per message. 1 sends each alone, as consumers built
    /// before `EnvelopeBatch` need: set it to 1 while any of those runs.
    OUTBOX_EVENTS_PER_MESSAGE = "32";
    /// How long published outbox rows and consumed events' inbox rows are
    /// kept, in hours (an inbox row must outlive every redelivery of its
    /// event).
    EVENTS_RETENTION_HOURS = "168";
    /// How often each service deletes rows past their retention.
    RETENTION_INTERVAL_SECS = "3600";
}

#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// [`AMQP_URL`].
    pub amqp_url: Secret,
    /// [`EVENTS_EXCHANGE`].
    pub exchange: String,
    /// [`EVENTS_PREFETCH`].
    pub prefetch: u16,
    /// [`EVENTS_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// [`EVENTS_RETRY_DELAYS_MS`].
    pub retry_delays: Vec<Duration>,
    /// [`OUTBOX_POLL_INTERVAL_MS`].
    pub relay_poll_interval: Duration,
    /// [`OUTBOX_EVENTS_PER_MESSAGE`].
    pub relay_events_per_message: usize,
    /// [`EVENTS_RETENTION_HOURS`].
    pub retention: Duration,
    /// [`RETENTION_INTERVAL_SECS`].
    pub retention_interval: Duration,
}

impl Default for EventsConfig {
    /// The declared defaults, whatever the environment says.
    fn default() -> Self {
        const VALID: &str = "a declared default parses";
        Self {
            amqp_url: AMQP_URL.default.into(),
            exchange: EVENTS_EXCHANGE.default.to_owned(),
            prefetch: EVENTS_PREFETCH.default.parse().expect(VALID),
            max_attempts: EVENTS_MAX_ATTEMPTS.default.parse().expect(VALID),
            retry_delays: parse_delays(EVENTS_RETRY_DELAYS_MS.default).expect(VALID),
            relay_poll_interval: Duration::from_millis(
                OUTBOX_POLL_INTERVAL_MS.default.parse().expect(VALID),
            ),
            relay_events_per_message: OUTBOX_EVENTS_PER_MESSAGE.default.parse().expect(VALID),
            retention: hours(EVENTS_RETENTION_HOURS.default.parse().expect(VALID)),
            retention_interval: Duration::from_secs(
                RETENTION_INTERVAL_SECS.default.parse().expect(VALID),
            ),
        }
    }
}

impl EventsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let amqp_url = AMQP_URL.secret().expect("AMQP_URL has a default");
        AMQP_URL.ensure(
            amqp_url.expose_secret().starts_with("amqp://"),
            "<redacted>",
            "must start with amqp:// (lapin is built without TLS)",
        )?;
        let prefetch: u16 = EVENTS_PREFETCH.get()?;
        EVENTS_PREFETCH.ensure(prefetch > 0, prefetch, "must be at least 1")?;
        let max_attempts: u32 = EVENTS_MAX_ATTEMPTS.get()?;
        EVENTS_MAX_ATTEMPTS.ensure(max_attempts > 0, max_attempts, "must be at least 1")?;
        let raw_delays: String = EVENTS_RETRY_DELAYS_MS.get()?;
        let retry_delays = parse_delays(&raw_delays)
            .map_err(|reason| EVENTS_RETRY_DELAYS_MS.invalid(&raw_delays, reason))?;
        let retention = retention(&retry_delays)?;
        let relay_events_per_message: usize = OUTBOX_EVENTS_PER_MESSAGE.get()?;
        OUTBOX_EVENTS_PER_MESSAGE.ensure(
            relay_events_per_message > 0,
            relay_events_per_message,
            "must be at least 1",
        )?;
        Ok(Self {
            amqp_url,
            exchange: EVENTS_EXCHANGE.get()?,
            prefetch,
            max_attempts,
            retry_delays,
            relay_poll_interval: OUTBOX_POLL_INTERVAL_MS.millis()?,
            relay_events_per_message,
            retention,
            retention_interval: positive(
                &RETENTION_INTERVAL_SECS,
                RETENTION_INTERVAL_SECS.secs()?,
            )?,
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
            legacy_queue: None,
        }
    }
}

/// The inbox must outlive every redelivery of an event: at least an hour,
/// and longer than the whole retry schedule.
fn retention(retry_delays: &[Duration]) -> Result<Duration, ConfigError> {
    let hours_set: u64 = EVENTS_RETENTION_HOURS.get()?;
    let kept = hours(hours_set);
    let schedule: Duration = retry_delays.iter().sum();
    EVENTS_RETENTION_HOURS.ensure(
        hours_set >= 1 && kept > schedule,
        hours_set,
        "must be at least 1 and longer than the retry schedule (EVENTS_RETRY_DELAYS_MS); \
         deleting an inbox row early lets a redelivered event apply twice",
    )?;
    Ok(kept)
}

fn hours(hours: u64) -> Duration {
    Duration::from_secs(hours.saturating_mul(3600))
}

fn positive(
    setting: &quill_platform::config::Setting,
    value: Duration,
) -> Result<Duration, ConfigError> {
    setting.ensure(!value.is_zero(), 0, "must be at least 1")?;
    Ok(value)
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
    fn the_declared_defaults_parse() {
        let defaults = EventsConfig::default();
        assert_eq!(defaults.retry_delays.len(), 3);
        assert_eq!(defaults.prefetch, 32);
    }

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
