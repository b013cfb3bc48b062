//! A service's gRPC server: its own services plus health and reflection,
//! every call authenticated, its background loops, and one drain.

use std::{convert::Infallible, future::Future, time::Duration};

use futures::future::BoxFuture;

use quill_platform::{
    authn::Authenticator,
    grpc,
    shutdown::{Background, CancellationToken, DRAIN_TIMEOUT, sleep_or_cancelled},
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

/// How often the dependencies a service cannot serve without are checked.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);
/// Failed checks in a row before the service reports NOT_SERVING: one slow
/// check on a busy pool must not take a loaded replica out of every
/// balancer (and push its load onto the others).
const FAILURES_TO_UNREADY: u32 = 3;

/// A check of one such dependency; `Err` says what is wrong.
type Probe = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What reflection lists beside the served services: health and itself.
const ALWAYS_SERVED: [&str; 3] = [
    tonic_health::pb::health_server::SERVICE_NAME,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Collects a service's gRPC services and background loops, then serves
/// them until shutdown. Health tells readiness apart from liveness: each
/// added service's own name reports SERVING while the process serves and
/// every dependency it cannot serve without answers ([`Self::depends_on`]),
/// and NOT_SERVING as soon as the drain begins; the overall name `""` stays
/// SERVING while the process runs (liveness: restarting it would not bring a
/// database back). Reflection (v1 and v1alpha: grpcurl 1.8 only speaks
/// v1alpha) lists exactly what this port serves.
pub struct GrpcServer {
    routes: RoutesBuilder,
    served: Vec<&'static str>,
    health: HealthReporter,
    background: Background,
    max_concurrent_streams: u32,
    probes: Vec<(&'static str, Probe)>,
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
            served: Vec::new(),
            health,
            background: Background::new(),
            max_concurrent_streams: grpc::MAX_CONCURRENT_STREAMS,
            probes: Vec::new(),
        }
    }

    /// A dependency this service cannot serve without (its database): while
    /// `probe` fails, health reports the service NOT_SERVING, so balancers
    /// and Kubernetes send its calls to a replica that can answer them.
    pub fn depends_on<F, Fut, E>(&mut self, name: &'static str, probe: F) -> &mut Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.probes.push((
            name,
            Box::new(move || {
                let check = probe();
                Box::pin(async move { check.await.map_err(|e| e.to_string()) })
            }),
        ));
        self
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
    /// shutdown; then reports NOT_SERVING, keeps answering for the drain
    /// delay, stops accepting, gives calls in flight up to [`DRAIN_TIMEOUT`]
    /// to finish, and as long again to the background loops.
    pub async fn serve(mut self, serving: Serving, authn: Authenticator) -> Result<(), ServeError> {
        let Serving {
            listener,
            shutdown,
            drain_delay,
        } = serving;
        // Both reflection versions describe every service they list, the
        // other version of reflection included.
        let reflection = || {
            self.served.iter().chain(&ALWAYS_SERVED).fold(
                tonic_reflection::server::Builder::configure()
                    .include_reflection_service(false)
                    .register_encoded_file_descriptor_set(quill_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(
                        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                    )
                    .register_encoded_file_descriptor_set(
                        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                    ),
                |builder, name| builder.with_service_name(*name),
            )
        };
        let (v1, v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
        self.routes
            .add_service(quill_platform::message_limits!(v1))
            .add_service(quill_platform::message_limits!(v1alpha));
        let readiness = Readiness {
            health: self.health.clone(),
            services: self.served.clone(),
        };
        readiness.set(ServingStatus::Serving).await;
        let probing = shutdown.child_token();
        let watcher = tokio::spawn(
            readiness
                .clone()
                .watch(std::mem::take(&mut self.probes), probing.clone()),
        );
        let stop_accepting = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                probing.cancel();
                // The watcher may be setting SERVING right now: let it end
                // first, so the drain's NOT_SERVING is the last word.
                let _ = watcher.await;
                readiness.set(ServingStatus::NotServing).await;
                // Callers see NOT_SERVING and move their calls elsewhere
                // while this one still answers; only then stop listening.
                tokio::time::sleep(drain_delay).await;
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
            tokio::time::sleep(drain_delay + DRAIN_TIMEOUT).await;
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

/// The readiness half of health: the served services' own names.
#[derive(Clone)]
struct Readiness {
    health: HealthReporter,
    services: Vec<&'static str>,
}

impl Readiness {
    async fn set(&self, status: ServingStatus) {
        for name in &self.services {
            self.health.set_service_status(name, status).await;
        }
    }

    /// Checks `probes` every [`READINESS_INTERVAL`] until `stop`, reporting
    /// NOT_SERVING while any fails.
    async fn watch(self, probes: Vec<(&'static str, Probe)>, stop: CancellationToken) {
        if probes.is_empty() {
            return;
        }
        let (mut ready, mut failures) = (true, 0);
        while !sleep_or_cancelled(READINESS_INTERVAL, &stop).await {
            let mut failing = None;
            for (name, probe) in &probes {
                let outcome = tokio::time::timeout(READINESS_INTERVAL, probe()).await;
                let problem = match outcome {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e,
                    Err(_) => format!("no answer within {READINESS_INTERVAL:?}"),
                };
                failing = Some((*name, problem));
                break;
            }
            failures = if failing.is_some() { failures + 1 } else { 0 };
            let now_ready = failures < FAILURES_TO_UNREADY;
            if stop.is_cancelled() || now_ready == ready {
                continue;
            }
            ready = now_ready;
            match failing {
                Some((dependency, problem)) => {
                    tracing::warn!(dependency, %problem, "not ready: a dependency is down");
                    self.set(ServingStatus::NotServing).await;
                }
                None => {
                    tracing::info!("ready again: every dependency answers");
                    self.set(ServingStatus::Serving).await;
                }
            }
        }
    }
}
