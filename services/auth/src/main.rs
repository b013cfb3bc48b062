//! `quill-auth [serve|migrate|health]`: serves the auth gRPC API (default), applies its database migrations, or
//! checks a running server's health (for container health checks).

use quill_auth::{Config, server};
use quill_platform::cli::{self, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Command::from_args()?;
    let _telemetry = quill_platform::telemetry::init("quill-auth");
    let config = Config::from_env()?;
    match command {
        Command::Migrate => server::migrate(&config).await,
        Command::Health => Ok(cli::check_health(config.listen).await?),
        Command::Serve => {
            let listener = cli::bind("AUTH_LISTEN", config.listen).await?;
            quill_platform::metrics::spawn_admin_server("127.0.0.1:9101")?;
            server::run(config, listener, quill_platform::shutdown::signal()).await
        }
    }
}
