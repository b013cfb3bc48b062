//! What every service binary does, written once: `quill-<service>
//! [serve|migrate|health]`.

use std::{future::Future, net::SocketAddr, time::Duration};

use quill_platform::{
    config::{ConfigError, Setting},
    metrics,
    settings::SHUTDOWN_DELAY_SECS,
    shutdown::{self, CancellationToken},
    telemetry,
};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::{
    cli::{self, Command},
    db::{self, DatabaseConfig},
};

/// One Quill service, as its binary, its tests and the bench start it.
pub trait Service {
    type Config: ServiceConfig;
    /// The process name in logs and traces (`quill-auth`).
    const NAME: &'static str;
    /// Where the Prometheus metrics listen unless `METRICS_LISTEN` says
    /// otherwise: loopback, a port per service so all run on one machine.
    const METRICS_LISTEN: &'static str;
    /// The service's embedded migrations (`sqlx::migrate!`).
    const MIGRATOR: &'static Migrator;

    /// Serves on `serving.listener` until `serving.shutdown` is cancelled,
    /// then drains.
    fn run(
        config: Self::Config,
        serving: Serving,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static;
}

/// A service's settings, of which the skeleton needs its [`ServerConfig`].
pub trait ServiceConfig: Sized + Send + 'static {
    fn from_env() -> Result<Self, ConfigError>;
    fn server(&self) -> &ServerConfig;
}

/// What the skeleton hands [`Service::run`]: the bound listener, the
/// shutdown token, and how long to keep answering, reported not ready, once
/// it is cancelled (`SHUTDOWN_DELAY_SECS`; none in tests).
#[derive(Debug)]
pub struct Serving {
    pub listener: TcpListener,
    pub shutdown: CancellationToken,
    pub drain_delay: Duration,
}

/// The three settings every service declares for itself
/// (`AUTH_LISTEN`, `AUTH_DATABASE_URL`, `AUTH_DATABASE_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    pub listen: Setting,
    pub database_url: Setting,
    pub database_max_connections: Setting,
}

/// What the skeleton needs of every service's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen_setting: &'static str,
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
}

impl ServerConfig {
    pub fn from_env(settings: &ServerSettings) -> Result<Self, ConfigError> {
        let url = settings
            .database_url
            .secret()
            .ok_or_else(|| settings.database_url.invalid("", "must be set"))?;
        let max_connections: u32 = settings.database_max_connections.get()?;
        settings.database_max_connections.ensure(
            max_connections > 0,
            max_connections,
            "must be at least 1",
        )?;
        let database = DatabaseConfig::new(url, max_connections);
        database.validate(settings.database_url.name)?;
        Ok(Self {
            listen_setting: settings.listen.name,
            listen: settings.listen.get()?,
            database,
        })
    }
}

/// The whole of a service's `main`.
pub async fn main<S: Service>() -> anyhow::Result<()> {
    quill_platform::allocator::return_freed_memory_at_once();
    let command = Command::from_args()?;
    let _telemetry = telemetry::init(S::NAME);
    let config = S::Config::from_env()?;
    let server = config.server();
    match command {
        Command::Migrate => {
            // Two connections: the migrator locks on one and works on the other.
            let database = DatabaseConfig {
                max_connections: 2,
                ..server.database.clone()
            };
            db::prepare(&database, S::MIGRATOR).await?;
            Ok(())
        }
        Command::Health => Ok(cli::check_health(server.listen).await?),
        Command::Serve => {
            let listener = cli::bind(server.listen_setting, server.listen).await?;
            let shutdown = shutdown::on_signal();
            // The metrics outlive the drain: they stop when the process does.
            metrics::spawn_admin_server(S::METRICS_LISTEN, CancellationToken::new())?;
            let drain_delay = SHUTDOWN_DELAY_SECS.secs()?;
            S::run(
                config,
                Serving {
                    listener,
                    shutdown,
                    drain_delay,
                },
            )
            .await
        }
    }
}
