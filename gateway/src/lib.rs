//! The gateway: Quill's only public door. It serves the RealWorld REST API
//! (plus extensions), verifies access tokens and checks revocation, applies
//! rate limits, and maps each route to gRPC calls on the services.

pub mod app;
pub mod config;
pub mod error;
pub mod extract;
pub mod json;
pub mod routes;
pub mod rpc;
pub mod server;
pub mod state;

pub use config::Config;
