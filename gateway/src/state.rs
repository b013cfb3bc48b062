//! What every handler may use: configuration, upstream clients, the
//! authenticator (tokens and session state), and the shutdown signal
//! long-lived responses end on.

use std::sync::Arc;

use quill_platform::shutdown::CancellationToken;
use quill_platform::{
    authn::Authenticator,
    grpc::{self, ServiceChannel},
    message_limits,
    service_identity::ServiceCredentials,
};
use quill_proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    content::v1::content_service_client::ContentServiceClient,
    notification::v1::notification_service_client::NotificationServiceClient,
};
use redis::aio::ConnectionManager;
use tonic::transport::Channel;

use crate::config::Config;

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
}

/// gRPC channels to the services. Channels are cheap to clone and reconnect
/// by themselves.
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
    /// Clients carry the gateway's service token, propagate the request's
    /// trace context in their metadata and share the services' message-size
    /// limit.
    pub fn auth(&self) -> AuthServiceClient<ServiceChannel> {
        message_limits!(AuthServiceClient::new(grpc::client(
            self.auth.clone(),
            &self.credentials
        )))
    }

    pub fn content(&self) -> ContentServiceClient<ServiceChannel> {
        message_limits!(ContentServiceClient::new(grpc::client(
            self.content.clone(),
            &self.credentials
        )))
    }

    pub fn notification(&self) -> NotificationServiceClient<ServiceChannel> {
        message_limits!(NotificationServiceClient::new(grpc::client(
            self.notification.clone(),
            &self.credentials
        )))
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
