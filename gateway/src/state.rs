//! What every handler may use: configuration, upstream clients, the
//! authenticator (tokens and session state), and the shutdown signal
//! long-lived responses end on.

use std::sync::Arc;

use quill_platform::{
    authn::Authenticator, cache::Cache, rate_limit::RateLimiter,
    service_identity::ServiceCredentials, shutdown::CancellationToken,
};
use quill_proto::{
    auth::v1::auth_service_server, content::v1::content_service_server,
    notification::v1::notification_service_server,
};
use redis::aio::ConnectionManager;
use tonic::transport::Channel;

use crate::{config::Config, images::ImageStore};

/// Cloned for every request, several times over (each `from_fn` middleware
/// clones the service stack inside it, with its state): one reference count,
/// where the fields' own clones were about 5% of the gateway's CPU under load.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Config,
    pub authn: Authenticator,
    /// Users' own accounts as auth answers them
    /// ([`quill_platform::account_cache`]).
    pub accounts: Cache,
    /// For readiness: requests cannot be authenticated without it.
    pub redis: ConnectionManager,
    pub upstreams: Upstreams,
    /// Cancelled when the server starts to drain: endless responses
    /// (notification streams) end then, or the drain would wait for them.
    pub shutdown: CancellationToken,
    /// Where uploaded images live.
    pub images: ImageStore,
    /// Counts uploads per user (`GATEWAY_UPLOAD_RATE_LIMIT`).
    pub upload_limiter: RateLimiter,
    /// `GATEWAY_DEFAULT_AVATAR_URL`, shared by every request that shows it.
    pub default_avatar: Option<Arc<str>>,
}

/// gRPC channels to the services, which `calls::Calls` makes clients of.
/// Channels are cheap to clone and reconnect by themselves.
#[derive(Clone)]
pub struct Upstreams {
    pub auth: Channel,
    pub content: Channel,
    pub notification: Channel,
    /// Proves to the services that calls come from the gateway (which they
    /// require for the client details it reports).
    pub credentials: ServiceCredentials,
}

impl Upstreams {
    /// Every upstream with the name readiness reports it under.
    /// Each upstream: its name in `/readyz`, its gRPC service, its channel.
    pub fn all(&self) -> [(&'static str, &'static str, Channel); 3] {
        [
            ("auth", auth_service_server::SERVICE_NAME, self.auth.clone()),
            (
                "content",
                content_service_server::SERVICE_NAME,
                self.content.clone(),
            ),
            (
                "notification",
                notification_service_server::SERVICE_NAME,
                self.notification.clone(),
            ),
        ]
    }
}
