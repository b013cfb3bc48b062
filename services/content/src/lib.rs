//! The content service: Quill's articles, comments, tags, favorites, follows
//! and the feed. It verifies the callers' access tokens itself with the
//! public keys auth publishes, decides what they may do from the shared
//! permission table, and keeps a read-model of authors (username, bio, image,
//! banned) fed by auth's `user.*` events, so listing articles never calls
//! auth per row: a miss costs one batched `GetUsersByIds` call. Its own
//! changes leave as events through a transactional outbox. Hot reads are
//! cached in Redis and made stale by the changes they depend on
//! (`read_cache`).

mod articles;
mod attempts;
mod authors;
mod batches;
mod commenting;
mod comments;
pub mod config;
pub mod cursor;
mod error;
mod events;
mod grpc;
mod known_tags;
mod policy;
mod profiles;
mod publishing;
mod read_cache;
pub mod repo;
pub mod server;
mod service;
mod slug;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validation;

pub use config::Config;
