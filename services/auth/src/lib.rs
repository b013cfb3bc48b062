//! The auth service: Quill's source of identity. It owns users, password
//! hashes, sessions and refresh tokens, signs access tokens with a private key
//! no other process holds, and publishes the public keys to verify them.

mod accounts;
pub mod config;
mod error;
mod events;
mod grpc;
mod login_guard;
mod password;
mod repo;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;
mod validation;

pub use config::Config;
