//! What every handler may use: configuration, upstream clients, the token
//! verifier, Redis-backed revocation list and rate limiter, and the shutdown
//! signal long-lived responses end on.

use std::sync::Arc;

use quill_platform::{
    grpc::{self, TracedChannel},
    revocation::RevocationList,
    token::TokenVerifier,
};
use quill_proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    content::v1::content_service_client::ContentServiceClient,
    notification::v1::notification_service_client::NotificationServiceClient,
};
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::{config::Config, rate_limit::RateLimiter};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub verifier: Arc<TokenVerifier>,
    pub revocations: RevocationList,
    pub rate_limiter: RateLimiter,
    pub redis: ConnectionManager,
    pub upstreams: Upstreams,
    /// Fires when the server starts shutting down, so responses that would
    /// never finish by themselves (Server-Sent Events) end and let graceful
    /// shutdown complete.
    pub shutdown: Shutdown,
}

/// The receiving side of the server's shutdown signal; cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Fires the [`Shutdown`] signal of every clone, present and future.
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Self) {
        let (trigger, signal) = watch::channel(false);
        (ShutdownTrigger(trigger), Self(signal))
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub async fn fired(&self) {
        let mut signal = self.0.clone();
        // An error means the trigger is gone, which only happens once the
        // server is done: treat it as shutdown too.
        let _ = signal.wait_for(|fired| *fired).await;
    }
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

/// gRPC channels to the services. Channels are cheap to clone and reconnect
/// by themselves.
#[derive(Clone)]
pub struct Upstreams {
    pub auth: Channel,
    pub content: Channel,
    pub notification: Channel,
}

impl Upstreams {
    /// Clients propagate the request's trace context in their metadata.
    pub fn auth(&self) -> AuthServiceClient<TracedChannel> {
        AuthServiceClient::new(grpc::traced(self.auth.clone()))
    }

    pub fn content(&self) -> ContentServiceClient<TracedChannel> {
        ContentServiceClient::new(grpc::traced(self.content.clone()))
    }

    pub fn notification(&self) -> NotificationServiceClient<TracedChannel> {
        NotificationServiceClient::new(grpc::traced(self.notification.clone()))
    }

    /// Every upstream with the name readiness reports it under.
    pub fn all(&self) -> [(&'static str, Channel); 3] {
        [
            ("auth", self.auth.clone()),
            ("content", self.content.clone()),
            ("notification", self.notification.clone()),
        ]
    }
}
