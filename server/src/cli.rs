//! The command line every service binary shares:
//! `quill-<service> [serve|migrate|health]`.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Serve the gRPC API (the default).
    Serve,
    /// Apply the database migrations, then exit.
    Migrate,
    /// Ask the running server's gRPC health service whether it serves; exit 0
    /// if it does. For container health checks: the image has no gRPC client.
    Health,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("unknown command {0:?}; expected serve, migrate or health")]
    UnknownCommand(String),
    #[error("binding {setting}={addr}: {source}")]
    Bind {
        setting: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("health check of {addr} failed: {reason}")]
    Unhealthy { addr: SocketAddr, reason: String },
}

impl Command {
    /// The first argument, if any.
    pub fn from_args() -> Result<Self, CliError> {
        Self::parse(std::env::args().nth(1).as_deref())
    }

    fn parse(arg: Option<&str>) -> Result<Self, CliError> {
        match arg {
            None | Some("serve") => Ok(Self::Serve),
            Some("migrate") => Ok(Self::Migrate),
            Some("health") => Ok(Self::Health),
            Some(other) => Err(CliError::UnknownCommand(other.to_owned())),
        }
    }
}

/// Binds the service's listener, naming the setting in the error.
pub async fn bind(setting: &str, addr: SocketAddr) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Bind {
            setting: setting.to_owned(),
            addr,
            source,
        })
}

/// Checks the overall health (service `""`) of the server listening on
/// `listen`, reached over loopback when it listens on every interface.
pub async fn check_health(listen: SocketAddr) -> Result<(), CliError> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let unhealthy = |reason: String| CliError::Unhealthy { addr, reason };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| unhealthy(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| unhealthy(with_sources(&e)))?;
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| unhealthy(e.message().to_owned()))?
        .into_inner()
        .status();
    match status {
        ServingStatus::Serving => Ok(()),
        other => Err(unhealthy(format!("status {}", other.as_str_name()))),
    }
}

/// `e` and its causes: tonic's transport error alone says only "transport error".
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_the_default_and_unknown_commands_are_refused() {
        assert_eq!(Command::parse(None).unwrap(), Command::Serve);
        assert_eq!(Command::parse(Some("serve")).unwrap(), Command::Serve);
        assert_eq!(Command::parse(Some("migrate")).unwrap(), Command::Migrate);
        assert_eq!(Command::parse(Some("health")).unwrap(), Command::Health);
        assert!(matches!(
            Command::parse(Some("--help")),
            Err(CliError::UnknownCommand(c)) if c == "--help"
        ));
    }
}
