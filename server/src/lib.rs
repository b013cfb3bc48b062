//! The skeleton every Quill service runs in. A service describes itself
//! once (an implementation of [`Service`]: its name, settings, migrations
//! and how it assembles its parts) and its binary is one line,
//! `quill_server::main::<MyService>()`, which gives it the command line
//! (`serve`, `migrate`, `health`), telemetry, the metrics listener and the
//! shutdown signal. Inside `Service::run`, [`db::prepare`] opens its pool and
//! a [`GrpcServer`] serves its gRPC services with health, reflection and
//! authentication, runs its background loops (relay, consumer, mail sender)
//! and drains them all, bounded, on shutdown.

mod cli;
pub mod db;
mod grpc_server;
mod process;
#[cfg(feature = "testing")]
pub mod testing;

pub use grpc_server::{GrpcServer, ServeError};
pub use process::{ServerConfig, ServerSettings, Service, ServiceConfig, Serving, main};
pub use quill_platform::shutdown::{Background, CancellationToken};
