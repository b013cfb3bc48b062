//! What every handler may use: configuration, upstream clients, the token
//! verifier, and Redis-backed revocation list and rate limiter.

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
