//! What every handler may use: configuration, upstream clients, the token
//! verifier, and Redis-backed revocation list and rate limiter.

use std::sync::Arc;

use quill_platform::{revocation::RevocationList, token::TokenVerifier};
use quill_proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    content::v1::content_service_client::ContentServiceClient,
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
}

impl Upstreams {
    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.auth.clone())
    }

    pub fn content(&self) -> ContentServiceClient<Channel> {
        ContentServiceClient::new(self.content.clone())
    }

    /// Every upstream with the name readiness reports it under.
    pub fn all(&self) -> [(&'static str, Channel); 2] {
        [
            ("auth", self.auth.clone()),
            ("content", self.content.clone()),
        ]
    }
}
