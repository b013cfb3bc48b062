//! `quill-gateway`: serves the REST API on GATEWAY_LISTEN, and Prometheus
//! metrics on the admin listener GATEWAY_METRICS_LISTEN.

use anyhow::Context;
use quill_gateway::{Config, server};
use quill_platform::shutdown::{self, CancellationToken};

// Freed memory goes back to the OS soon after a burst (glibc's malloc keeps
// its per-thread arenas at their peak).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quill_platform::allocator::return_freed_memory_at_once();
    let _telemetry = quill_platform::telemetry::init("quill-gateway");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding GATEWAY_LISTEN={}", config.listen))?;
    if let Some(addr) = config.metrics_listen {
        // The metrics outlive the drain: they stop when the process does.
        quill_platform::metrics::spawn_admin_server_on(
            "GATEWAY_METRICS_LISTEN",
            addr,
            CancellationToken::new(),
        )?;
    }
    server::run(config, listener, shutdown::on_signal()).await
}
