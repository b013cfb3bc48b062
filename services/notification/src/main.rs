//! `quill-notification [serve|migrate|health]`: serves the notification gRPC API and
//! consumes its event queue (default), applies its database migrations, or
//! checks a running server's health (for container health checks).

// Freed memory goes back to the OS soon after a burst (glibc's malloc keeps
// its per-thread arenas at their peak).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quill_server::main::<quill_notification::server::Notification>().await
}
