//! The gateway's cache of each user's own account, as auth's
//! `GetCurrentUser` answers it: the one read every signed-in client makes
//! on every page load (`GET /api/user`).
//!
//! Auth owns the rows, so auth invalidates: after every change to a user's
//! row commits, and before it answers, it bumps the user's version
//! ([`version`]). The gateway reads the entry and that version in the same
//! round trip as the session check it makes anyway, so a hit costs neither
//! a Redis round trip of its own nor a call to auth. Both sides name the
//! keys through this module, so they cannot drift apart.

use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::cache::{Cache, Version};

/// The cache, as the gateway reads it, under the deployment's `prefix`
/// (`REDIS_PREFIX`); a zero `ttl` turns it off.
pub fn cache(redis: ConnectionManager, prefix: &str, ttl: Duration) -> Cache {
    Cache::new(redis, format!("{prefix}accounts:"), ttl)
}

/// The same cache as auth holds it, only to invalidate: bumps do not
/// depend on the entries' TTL, which is the gateway's to set, but a zero
/// one would turn them off.
pub fn invalidator(redis: ConnectionManager, prefix: &str) -> Cache {
    cache(redis, prefix, Duration::from_secs(1))
}

/// The entry of `user`'s account, and the versions it depends on: the
/// reader of the keys and the reader of the entry must name the same.
pub fn entry(user: Uuid) -> (String, [Version; 1]) {
    (user.to_string(), [version(user)])
}

/// What `user`'s entry depends on: their row in auth.
pub fn version(user: Uuid) -> Version {
    Version::new(format!("user:{user}"))
}
