//! `quill-auth [serve|migrate|health]`: serves the auth gRPC API (default), applies its database migrations, or
//! checks a running server's health (for container health checks).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quill_server::main::<quill_auth::server::Auth>().await
}
