//! The list of revoked sessions, in Redis. Auth writes an entry when a session
//! ends (logout, ban, password change, refresh-token reuse) and keeps it for
//! the access token's lifetime; the gateway refuses tokens of listed sessions
//! at once instead of waiting for them to expire.

use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager};
use uuid::Uuid;

#[derive(Clone)]
pub struct RevocationList {
    redis: ConnectionManager,
    prefix: String,
}

impl RevocationList {
    /// `prefix` namespaces the keys (per deployment, or per test).
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
        }
    }

    fn key(&self, session: Uuid) -> String {
        format!("{}revoked-session:{session}", self.prefix)
    }

    pub async fn revoke(&self, session: Uuid, for_at_least: Duration) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        conn.set_ex(self.key(session), 1u8, for_at_least.as_secs().max(1))
            .await
    }

    pub async fn revoke_all(
        &self,
        sessions: &[Uuid],
        for_at_least: Duration,
    ) -> redis::RedisResult<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for session in sessions {
            pipe.set_ex(self.key(*session), 1u8, for_at_least.as_secs().max(1))
                .ignore();
        }
        let mut conn = self.redis.clone();
        pipe.query_async(&mut conn).await
    }

    pub async fn is_revoked(&self, session: Uuid) -> redis::RedisResult<bool> {
        let mut conn = self.redis.clone();
        conn.exists(self.key(session)).await
    }
}

/// Connects to Redis with a manager that reconnects by itself.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    crate::retry::with_backoff("connecting to Redis", 10, || {
        ConnectionManager::new(client.clone())
    })
    .await
}
