//! Plumbing every Quill process shares, the gateway included: configuration
//! from the environment, the shutdown tree and backoff, logging, gRPC
//! plumbing (clients, server layers), who is calling (access tokens, session state cached in Redis,
//! service identity), roles and permissions, rate limits, read-through
//! caching in Redis; tracing
//! (OpenTelemetry, W3C propagation) and Prometheus metrics.

pub mod account_cache;
pub mod allocator;
pub mod authn;
pub mod authz;
pub mod balance;
pub mod cache;
pub mod config;
pub mod error_info;
pub mod grpc;
mod in_flight;
mod json_lines;
pub mod limits;
pub mod metrics;
pub mod quota_headers;
pub mod rate_limit;
pub mod request_id;
pub mod retry;
pub mod retry_calls;
mod rpc_trace;
pub mod service_identity;
pub mod sessions;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod token;
pub mod trace_context;
mod unfinished_calls;
