//! The gateway: Quill's only public door. It serves the RealWorld REST API
//! (plus extensions), verifies access tokens and checks revocation, applies
//! rate limits, and maps each route to gRPC calls on the services.

pub mod app;
mod avatar;
mod bodies;
mod calls;
pub mod challenge;
mod conditional;
pub mod config;
pub mod error;
pub mod extract;
pub mod images;
mod route_table;
pub mod routes;
pub mod server;
pub mod state;
mod versions;

pub use config::Config;
