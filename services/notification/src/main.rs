//! `quill-notification [serve|migrate]`: serves the notification gRPC API
//! and consumes its event queue (default), or only applies its database
//! migrations.

use anyhow::Context;
use quill_notification::{Config, server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = quill_platform::telemetry::init("notification");
    let config = Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        Some("migrate") => server::migrate(&config).await,
        None | Some("serve") => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding NOTIFICATION_LISTEN={}", config.listen))?;
            quill_platform::metrics::spawn_admin_server("127.0.0.1:9103")?;
            server::run(config, listener, quill_platform::shutdown::signal()).await
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; expected serve or migrate"),
    }
}
