//! A service's gRPC server: its own services plus health and reflection,
//! every call authenticated, its background loops, and one drain.

use std::convert::Infallible;

use quill_platform::{
    authn::Authenticator,
    grpc,
    shutdown::{Background, DRAIN_TIMEOUT},
};
use tonic::{body::Body, server::NamedService, service::RoutesBuilder};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::Serving;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The reflection services, which reflection lists beside the served ones.
const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Collects a service's gRPC services and background loops, then serves
/// them until shutdown. Health reports each added service SERVING once the
/// server starts and NOT_SERVING as soon as the drain begins; reflection
/// (v1 and v1alpha: grpcurl 1.8 only speaks v1alpha) lists exactly what this
/// port serves.
pub struct GrpcServer {
    routes: RoutesBuilder,
    served: Vec<&'static str>,
    health: HealthReporter,
    background: Background,
    max_concurrent_streams: u32,
}

impl Default for GrpcServer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServer {
    pub fn new() -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(quill_platform::message_limits!(health_service));
        Self {
            routes,
            served: vec![tonic_health::pb::health_server::SERVICE_NAME],
            health,
            background: Background::new(),
            max_concurrent_streams: grpc::MAX_CONCURRENT_STREAMS,
        }
    }

    /// HTTP/2 streams one client connection may hold open at once (default
    /// [`grpc::MAX_CONCURRENT_STREAMS`]); a service with long-lived streams
    /// sets its own, above its cap on them.
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = streams;
        self
    }

    /// Serves a generated service; wrap it in
    /// [`message_limits!`](quill_platform::message_limits) first.
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.served.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// The loops that run beside the server (relay, consumer...). They are
    /// stopped after the server has drained, so the work of its last calls
    /// still happens.
    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Serves on the listener, every call authenticated by `authn`, until
    /// shutdown; then stops accepting, gives calls in flight up to
    /// [`DRAIN_TIMEOUT`] to finish, and as long again to the background loops.
    pub async fn serve(mut self, serving: Serving, authn: Authenticator) -> Result<(), ServeError> {
        let Serving { listener, shutdown } = serving;
        let reflection = || {
            self.served.iter().chain(&REFLECTION).fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(quill_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, name| builder.with_service_name(*name),
            )
        };
        let (v1, v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
        self.routes
            .add_service(quill_platform::message_limits!(v1))
            .add_service(quill_platform::message_limits!(v1alpha));
        for name in &self.served {
            self.health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let stop_accepting = {
            let (health, served, shutdown) =
                (self.health.clone(), self.served.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                for name in served.iter().chain(&[""]) {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
            }
        };
        let served = grpc::serve(
            listener,
            self.routes.routes(),
            authn,
            self.max_concurrent_streams,
            stop_accepting,
        );
        let drain_deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        let result = tokio::select! {
            served = served => served.map_err(ServeError::from),
            () = drain_deadline => {
                tracing::warn!("calls still in flight after {DRAIN_TIMEOUT:?}; ending them");
                Ok(())
            }
        };
        self.background.drain(DRAIN_TIMEOUT).await;
        result
    }
}
