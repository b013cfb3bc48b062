//! Plumbing every Quill process shares: configuration from the environment,
//! shutdown, logging, database bootstrap, the gRPC server skeleton (health and
//! reflection), access-token verification, roles and permissions, and the
//! session revocation list in Redis; tracing (OpenTelemetry, W3C propagation)
//! and Prometheus metrics.

pub mod authz;
pub mod cli;
pub mod config;
pub mod db;
pub mod events;
pub mod grpc;
pub mod metrics;
pub mod retry;
pub mod revocation;
mod rpc_trace;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod token;
pub mod trace_context;
