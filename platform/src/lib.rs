//! Plumbing every Quill process shares: configuration from the environment,
//! shutdown, logging, database bootstrap, the gRPC server skeleton (health and
//! reflection), access-token verification, roles and permissions, and the
//! session revocation list in Redis.

pub mod authz;
pub mod config;
pub mod db;
pub mod events;
pub mod grpc;
pub mod retry;
pub mod revocation;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod token;
