//! The notification service: consumes auth's and content's events and turns
//! them into in-app notifications (new follower, comment or favorite on your
//! article, new article by someone you follow, fanned out over content's
//! follower stream) and mail (welcome, comments) over SMTP, each obeying the
//! recipient's preferences. It serves the caller's list, unread count, read
//! marks and preferences, and a live `Subscribe` stream fed by PostgreSQL
//! LISTEN/NOTIFY, so every replica pushes every commit.

pub mod config;
mod error;
mod events;
mod grpc;
mod inbox;
mod live;
mod mail;
mod preferences;
mod repo;
mod rules;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
mod watching;

pub use config::Config;
pub use live::LISTENER_APPLICATION_NAME;
