//! The auth service: Quill's source of identity. It owns users, password
//! hashes, sessions and refresh tokens, signs access tokens with a private key
//! no other process holds, and publishes the public keys to verify them.

pub mod accounts;
pub mod config;
pub mod error;
pub mod events;
pub mod grpc;
mod login_guard;
pub mod password;
pub mod repo;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;
pub mod validation;

pub use config::Config;
