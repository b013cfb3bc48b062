//! Settings of the notification service, from the environment.

use std::time::Duration;

use quill_events::{EventsConfig, catalog, config::EVENTS_QUEUE_PREFIX};
use quill_platform::{
    authn::AuthnConfig,
    config::{ConfigError, ensure_upstream_urls},
    settings::{AUTH_URL, CONTENT_URL},
};
use quill_server::{ServerConfig, ServerSettings};

quill_platform::settings! {
    ALL;
    /// Where notification's gRPC server listens.
    NOTIFICATION_LISTEN = "127.0.0.1:50053";
    /// notification's database, created if missing (may carry a password).
    NOTIFICATION_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/quill_notification";
    /// Connections in notification's pool (the live listener holds one
    /// more, of its own).
    NOTIFICATION_DATABASE_MAX_CONNECTIONS = "10";
    /// The mail relay, `smtp://host[:port]` (plain SMTP). Unset: no mail is
    /// queued or sent, in-app notifications only.
    SMTP_URL = "";
    /// The sender of every mail.
    MAIL_FROM = "Quill <no-reply@quill.localhost>";
    /// How often an idle mail sender looks for mail it was not woken for.
    MAIL_POLL_INTERVAL_MS = "2000";
    /// Delivery attempts before a mail is marked failed.
    MAIL_MAX_ATTEMPTS = "8";
    /// How long sent and failed mail is kept for an operator, in hours.
    MAIL_RETENTION_HOURS = "720";
    /// Follower ids per streamed batch of a new-article fan-out.
    NOTIFICATION_FANOUT_BATCH = "500";
    /// How often a live `Subscribe` stream re-checks its session; it ends
    /// when the session does.
    NOTIFICATION_STREAM_RECHECK_SECS = "30";
    /// Live streams one user may hold open at once; more answer
    /// `RESOURCE_EXHAUSTED` (429 at the gateway).
    NOTIFICATION_MAX_STREAMS_PER_USER = "5";
    /// Live streams one instance holds open at once; its HTTP/2
    /// max-concurrent-streams per connection is this + 256, so calls always
    /// have room beside the streams.
    NOTIFICATION_MAX_STREAMS = "1000";
    /// Announce every new notification to the instances' live streams, not
    /// only those of users with a stream open: `true` while instances of a
    /// release before stream leases (migration 0012) still run, as in a
    /// rolling upgrade from one; unset once none does.
    NOTIFICATION_ANNOUNCE_ALL = "false";
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `NOTIFICATION_LISTEN`, `NOTIFICATION_DATABASE_URL`,
    /// `NOTIFICATION_DATABASE_MAX_CONNECTIONS`.
    pub server: ServerConfig,
    /// Where auth serves gRPC: the public keys that verify callers' tokens.
    pub auth_url: String,
    /// Where content serves gRPC: the follower fan-out stream.
    pub content_url: String,
    /// `None` disables email (with a warning at start).
    pub smtp: Option<SmtpServer>,
    /// `MAIL_FROM`: the sender of every mail.
    pub mail_from: String,
    /// Follower ids per `StreamFollowerIds` batch, each one INSERT.
    pub fanout_batch: u32,
    /// How often an idle mail sender looks for mail it was not woken for.
    pub mail_poll_interval: Duration,
    /// Delivery attempts before a mail is marked failed.
    pub mail_max_attempts: i32,
    /// [`MAIL_RETENTION_HOURS`].
    pub mail_retention: Duration,
    pub events: EventsConfig,
    /// `EVENTS_QUEUE_PREFIX`: the queue consumed is `<prefix>.notification`
    /// (plain `notification` when empty), as in the event catalog.
    pub events_queue_prefix: String,
    /// Redis (session cache) and the service secret.
    pub authn: AuthnConfig,
    /// How often a live `Subscribe` stream re-checks its session; it ends
    /// when the session does (`NOTIFICATION_STREAM_RECHECK_SECS`).
    pub stream_recheck: Duration,
    pub streams: StreamLimits,
    /// `NOTIFICATION_ANNOUNCE_ALL`.
    pub announce_all: bool,
}

/// Live streams (`Subscribe`) this instance holds open at once. Each is an
/// HTTP/2 stream for as long as the client listens, so without a cap one
/// session could take every stream a connection may carry (the gateway's
/// one connection included) and stall every other call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// `NOTIFICATION_MAX_STREAMS_PER_USER`: a few tabs and devices.
    pub per_user: usize,
    /// `NOTIFICATION_MAX_STREAMS`: all users together.
    pub total: usize,
}

/// HTTP/2 streams a connection keeps for ordinary calls even when it
/// carries every live stream of the instance (the gateway's may).
const RPC_STREAMS_HEADROOM: u32 = 256;

impl StreamLimits {
    /// The server's HTTP/2 max-concurrent-streams per connection: above the
    /// instance's cap on live streams, so a connection that carries all of
    /// them still has room for unary calls.
    pub fn http2_max_concurrent_streams(&self) -> u32 {
        u32::try_from(self.total)
            .unwrap_or(u32::MAX)
            .saturating_add(RPC_STREAMS_HEADROOM)
    }
}

/// A plain-SMTP relay (`SMTP_URL=smtp://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
}

impl SmtpServer {
    /// Parses `smtp://host[:port]` (port 25 when omitted).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("smtp://")
            .ok_or("must be smtp://host[:port] (TLS is not built in)")?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|e| format!("port {port:?}: {e}"))?,
            ),
            None => (authority, 25),
        };
        if host.is_empty() || host.contains(['/', '@']) {
            return Err("needs a host and nothing else".into());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl quill_server::ServiceConfig for Config {
    fn from_env() -> Result<Self, ConfigError> {
        let smtp = match SMTP_URL.value() {
            Some(url) => {
                // The URL may carry credentials: never echo it.
                Some(
                    SmtpServer::parse(&url)
                        .map_err(|reason| SMTP_URL.invalid("<redacted>", reason))?,
                )
            }
            None => None,
        };
        let config = Self {
            server: ServerConfig::from_env(&ServerSettings {
                listen: NOTIFICATION_LISTEN,
                database_url: NOTIFICATION_DATABASE_URL,
                database_max_connections: NOTIFICATION_DATABASE_MAX_CONNECTIONS,
            })?,
            auth_url: AUTH_URL.get()?,
            content_url: CONTENT_URL.get()?,
            smtp,
            mail_from: MAIL_FROM.get()?,
            fanout_batch: NOTIFICATION_FANOUT_BATCH.get()?,
            mail_poll_interval: MAIL_POLL_INTERVAL_MS.millis()?,
            mail_max_attempts: MAIL_MAX_ATTEMPTS.get()?,
            mail_retention: mail_retention()?,
            events: EventsConfig::from_env()?,
            events_queue_prefix: EVENTS_QUEUE_PREFIX.text(),
            authn: AuthnConfig::from_env()?,
            stream_recheck: NOTIFICATION_STREAM_RECHECK_SECS.secs()?,
            streams: StreamLimits {
                per_user: NOTIFICATION_MAX_STREAMS_PER_USER.get()?,
                total: NOTIFICATION_MAX_STREAMS.get()?,
            },
            announce_all: NOTIFICATION_ANNOUNCE_ALL.get()?,
        };
        config.validate()?;
        Ok(config)
    }

    fn server(&self) -> &ServerConfig {
        &self.server
    }
}

/// At least an hour: a sent mail is kept for an operator to look at.
fn mail_retention() -> Result<Duration, ConfigError> {
    let hours: u64 = MAIL_RETENTION_HOURS.get()?;
    MAIL_RETENTION_HOURS.ensure(hours >= 1, hours, "must be at least 1")?;
    Ok(Duration::from_secs(hours.saturating_mul(3600)))
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        NOTIFICATION_STREAM_RECHECK_SECS.ensure(
            !self.stream_recheck.is_zero(),
            0,
            "must be at least 1",
        )?;
        ensure_upstream_urls(&AUTH_URL, &self.auth_url)?;
        ensure_upstream_urls(&CONTENT_URL, &self.content_url)?;
        MAIL_FROM.ensure(
            self.mail_from.parse::<lettre::message::Mailbox>().is_ok(),
            &self.mail_from,
            "must be an address such as `Quill <no-reply@example.com>`",
        )?;
        NOTIFICATION_FANOUT_BATCH.ensure(
            (1..=5_000).contains(&self.fanout_batch),
            self.fanout_batch,
            "must be between 1 and 5000",
        )?;
        MAIL_POLL_INTERVAL_MS.ensure(!self.mail_poll_interval.is_zero(), 0, "must be positive")?;
        MAIL_MAX_ATTEMPTS.ensure(
            self.mail_max_attempts > 0,
            self.mail_max_attempts,
            "must be at least 1",
        )?;
        NOTIFICATION_MAX_STREAMS_PER_USER.ensure(
            self.streams.per_user >= 1,
            self.streams.per_user,
            "must be at least 1",
        )?;
        // The HTTP/2 setting derived from it must stay a u32 with headroom.
        NOTIFICATION_MAX_STREAMS.ensure(
            (self.streams.per_user..=1_000_000).contains(&self.streams.total),
            self.streams.total,
            "must be between NOTIFICATION_MAX_STREAMS_PER_USER and 1000000",
        )
    }

    /// The broker topology of this service's queue; replicas compete on it.
    pub fn topology(&self) -> quill_events::Topology {
        catalog::notification(&self.events, &self.events_queue_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_parse_with_and_without_port() {
        assert_eq!(
            SmtpServer::parse("smtp://127.0.0.1:2525").unwrap(),
            SmtpServer {
                host: "127.0.0.1".into(),
                port: 2525
            }
        );
        assert_eq!(SmtpServer::parse("smtp://mail.internal").unwrap().port, 25);
        assert!(SmtpServer::parse("smtps://mail.internal").is_err());
        assert!(SmtpServer::parse("smtp://:25").is_err());
        assert!(SmtpServer::parse("smtp://host:x").is_err());
    }

    #[test]
    fn ordinary_calls_keep_room_beside_every_live_stream() {
        let limits = StreamLimits {
            per_user: 5,
            total: 1_000,
        };
        assert!(limits.http2_max_concurrent_streams() > 1_000);
    }
}
