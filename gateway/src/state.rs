//! What every handler may use: configuration, upstream clients, the
//! authenticator (tokens and session state), and the shutdown signal
//! long-lived responses end on.

use std::sync::Arc;

use quill_platform::{
    authn::Authenticator, rate_limit::RateLimiter, service_identity::ServiceCredentials,
    shutdown::CancellationToken,
};
use quill_proto::{
    auth::v1::auth_service_server, content::v1::content_service_server,
    notification::v1::notification_service_server,
};
use redis::aio::ConnectionManager;
use tonic::transport::Channel;

use crate::{config::Config, images::ImageStore};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub authn: Authenticator,
    /// For readiness: requests cannot be authenticated without it.
    pub redis: ConnectionManager,
    pub upstreams: Upstreams,
    /// Fires when the server starts shutting down, so responses that would
    /// never finish by themselves (Server-Sent Events) end and let graceful
    /// shutdown complete.
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
