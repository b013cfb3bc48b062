//! Whether a session may still act, and as which role: the one question every
//! service asks on every authenticated call.
//!
//! The source of truth is auth's database (the `sessions` and `users`
//! tables). Redis holds a cache of its answers in front of it, so a check
//! costs one Redis round trip; a miss (an entry never filled, expired, or
//! lost when Redis restarted) asks the truth again. Nothing is ever decided
//! by the absence of a Redis key, so a Redis that keeps nothing on disk
//! cannot bring a revoked session back.
//!
//! Writes that end a session (auth only) overwrite the entry
//! (`SET`); fills after a miss only create it (`SET NX`). A fill that read
//! the truth before a concurrent revocation committed therefore cannot
//! replace the revocation's entry, whichever order the two reach Redis in.
//! Role changes rewrite live entries but never an ended one.

use std::{sync::Arc, time::Duration};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

use crate::{authz::Role, cache::Found};

/// What the truth says about a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Live, for this user, who now holds `role` (not necessarily the role
    /// in the token: a role change takes effect on the next call).
    Live { user: Uuid, role: Role },
    /// Revoked, expired, unknown, or its user is banned.
    Ended,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Neither the cache nor the source of truth could answer: callers must
    /// refuse (fail closed), never admit.
    #[error("session state unavailable: {0}")]
    Unavailable(String),
}

/// The source of truth: auth's database in auth, auth's `CheckSession` RPC
/// everywhere else.
#[async_trait::async_trait]
pub trait SessionSource: Send + Sync + 'static {
    async fn status(&self, session: Uuid) -> Result<SessionStatus, SessionError>;
}

/// Session answers cached in Redis in front of a [`SessionSource`].
#[derive(Clone)]
pub struct Sessions {
    redis: ConnectionManager,
    prefix: String,
    source: Arc<dyn SessionSource>,
    live_ttl: Duration,
}

/// How long a call waits on Redis before it asks the source instead: a
/// Redis that is down or unreachable must cost a request little.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// How long a cached "live" answer is trusted without asking the source
/// again. Revocations and role changes overwrite entries at once; this only
/// bounds how long a lost overwrite (Redis failing mid-write) could matter.
pub const DEFAULT_LIVE_TTL: Duration = Duration::from_secs(60);

impl Sessions {
    /// `prefix` namespaces the keys (per deployment, or per test) and must be
    /// the same in every process.
    pub fn new(
        redis: ConnectionManager,
        prefix: impl Into<String>,
        source: Arc<dyn SessionSource>,
    ) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
            source,
            live_ttl: DEFAULT_LIVE_TTL,
        }
    }

    fn key(&self, session: Uuid) -> String {
        format!("{}session:{session}", self.prefix)
    }

    /// The session's status. `ended_ttl` is how long an "ended" answer found
    /// at the source may be cached: the remaining life of the token that
    /// asked, after which no token of the session can verify anyway.
    pub async fn status(
        &self,
        session: Uuid,
        ended_ttl: Duration,
    ) -> Result<SessionStatus, SessionError> {
        self.status_along(session, ended_ttl, &[]).await.0
    }

    /// [`Self::status`], reading the keys `along` in the same round trip:
    /// their values, in order, come back beside the status (`None` when
    /// Redis could not be read).
    pub async fn status_along(
        &self,
        session: Uuid,
        ended_ttl: Duration,
        along: &[String],
    ) -> (Result<SessionStatus, SessionError>, Option<Found>) {
        let mut conn = self.redis.clone();
        let read = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("MGET")
                .arg(self.key(session))
                .arg(along)
                .query_async::<Found>(&mut conn),
        )
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer in time",
            )))
        });
        let (cached, along) = match read {
            Ok(mut values) if values.len() == along.len() + 1 => {
                let cached = values.remove(0);
                (cached, Some(values))
            }
            Ok(_) => {
                tracing::warn!(
                    "session cache answered the wrong number of values; asking the source"
                );
                (None, None)
            }
            // The cache is only a cache: answer from the source, which fails
            // closed by itself if it cannot answer either.
            Err(e) => {
                tracing::warn!(error = %e, "session cache unavailable; asking the source");
                (None, None)
            }
        };
        if let Some(value) = cached {
            if let Some(status) = std::str::from_utf8(&value).ok().and_then(decode) {
                return (Ok(status), along);
            }
            tracing::warn!(%session, "unreadable session cache entry; asking the source");
        }
        (
            self.status_from_source(session, ended_ttl, conn).await,
            along,
        )
    }

    /// Asks the source, and caches its answer unless an entry appeared
    /// meanwhile.
    async fn status_from_source(
        &self,
        session: Uuid,
        ended_ttl: Duration,
        mut conn: ConnectionManager,
    ) -> Result<SessionStatus, SessionError> {
        let status = self.source.status(session).await?;
        let ttl = match status {
            SessionStatus::Live { .. } => self.live_ttl,
            SessionStatus::Ended => ended_ttl,
        };
        let filled: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.key(session))
            .arg(encode(status))
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .arg("NX")
            .query_async(&mut conn)
            .await;
        if let Err(e) = filled {
            tracing::warn!(error = %e, "could not cache a session status");
        }
        Ok(status)
    }

    /// Records sessions as ended for `for_at_least` (the longest a token of
    /// theirs can still verify). Auth calls this before its transaction
    /// commits: if Redis fails, the change is rolled back; if the commit fails
    /// afterwards, the session is refused early, never accepted late.
    pub async fn end(&self, sessions: &[Uuid], for_at_least: Duration) -> redis::RedisResult<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for session in sessions {
            pipe.set_ex(
                self.key(*session),
                encode(SessionStatus::Ended),
                for_at_least.as_secs().max(1),
            )
            .ignore();
        }
        let mut conn = self.redis.clone();
        pipe.query_async(&mut conn).await
    }

    /// Records the sessions' new status (after a role change) for every
    /// process's next call, except where a session has ended meanwhile: only
    /// revocations may overwrite an entry unconditionally, or a role change
    /// racing a logout could bring the session back.
    pub async fn set_live(
        &self,
        sessions: &[Uuid],
        user: Uuid,
        role: Role,
    ) -> redis::RedisResult<()> {
        const SET_UNLESS_ENDED: &str = "for _, key in ipairs(KEYS) do \
             if redis.call('GET', key) ~= 'ended' then \
             redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end end return 0";
        if sessions.is_empty() {
            return Ok(());
        }
        let mut eval = redis::cmd("EVAL");
        eval.arg(SET_UNLESS_ENDED).arg(sessions.len());
        for session in sessions {
            eval.arg(self.key(*session));
        }
        eval.arg(encode(SessionStatus::Live { user, role }))
            .arg(self.live_ttl.as_secs().max(1));
        let mut conn = self.redis.clone();
        eval.query_async::<i64>(&mut conn).await.map(|_| ())
    }
}

fn encode(status: SessionStatus) -> String {
    match status {
        SessionStatus::Live { user, role } => format!("live:{user}:{role}"),
        SessionStatus::Ended => "ended".to_owned(),
    }
}

fn decode(value: &str) -> Option<SessionStatus> {
    if value == "ended" {
        return Some(SessionStatus::Ended);
    }
    let mut parts = value.strip_prefix("live:")?.splitn(2, ':');
    let user = parts.next()?.parse().ok()?;
    let role = parts.next()?.parse().ok()?;
    Some(SessionStatus::Live { user, role })
}

/// Connects to Redis with a manager that reconnects by itself.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    use redis::{IntoConnectionInfo, io::tcp::TcpSettings};
    // Many requests share this connection: with Nagle's algorithm each
    // command written while another is unanswered waits for an ACK.
    let info = url
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    let client = redis::Client::open(info)?;
    // A command that finds the connection lost waits for its reconnection:
    // by default six retries over about six seconds, for every request
    // while Redis is down. One retry, each attempt bounded, makes an outage
    // cost each call a quick error, which every user of Redis here answers without it
    // (the session source, the cache's source, an open rate limit).
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(REDIS_TIMEOUT));
    crate::retry::with_backoff("connecting to Redis", 10, || {
        ConnectionManager::new_with_config(client.clone(), config.clone())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that would say "live": the cache alone must decide.
    struct AlwaysLive;

    #[async_trait::async_trait]
    impl SessionSource for AlwaysLive {
        async fn status(&self, _: Uuid) -> Result<SessionStatus, SessionError> {
            Ok(SessionStatus::Live {
                user: Uuid::nil(),
                role: Role::Admin,
            })
        }
    }

    /// Against the real Redis, under a prefix of its own.
    #[tokio::test]
    async fn a_role_change_never_overwrites_an_ended_session() {
        let url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let redis = connect(&url).await.expect("redis");
        let prefix = format!("test:{}:", Uuid::new_v4().simple());
        let sessions = Sessions::new(redis.clone(), prefix.clone(), Arc::new(AlwaysLive));
        let (ended, live, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

        sessions
            .end(&[ended], Duration::from_secs(60))
            .await
            .expect("end");
        sessions
            .set_live(&[ended, live], user, Role::Admin)
            .await
            .expect("set live");

        let ttl = Duration::from_secs(60);
        assert_eq!(
            sessions.status(ended, ttl).await.unwrap(),
            SessionStatus::Ended
        );
        assert_eq!(
            sessions.status(live, ttl).await.unwrap(),
            SessionStatus::Live {
                user,
                role: Role::Admin
            }
        );
        let mut conn = redis.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(sessions.key(ended))
            .arg(sessions.key(live))
            .query_async(&mut conn)
            .await;
    }

    /// Against the real Redis, under a prefix of its own.
    #[tokio::test]
    async fn keys_read_along_a_check_come_back_beside_its_answer() {
        let url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let redis = connect(&url).await.expect("redis");
        let prefix = format!("test:{}:", Uuid::new_v4().simple());
        let sessions = Sessions::new(redis.clone(), prefix.clone(), Arc::new(AlwaysLive));
        let session = Uuid::now_v7();
        let (set, unset) = (format!("{prefix}set"), format!("{prefix}unset"));
        let mut conn = redis.clone();
        let _: () = redis::cmd("SET")
            .arg(&set)
            .arg("value")
            .query_async(&mut conn)
            .await
            .expect("set");
        let along = [set.clone(), unset.clone()];
        let expected = Some(vec![Some(b"value".to_vec()), None]);
        let ttl = Duration::from_secs(60);

        // A miss, answered by the source, then the entry it filled.
        for _ in 0..2 {
            let (status, found) = sessions.status_along(session, ttl, &along).await;
            assert_eq!(
                status.unwrap(),
                SessionStatus::Live {
                    user: Uuid::nil(),
                    role: Role::Admin
                }
            );
            assert_eq!(found, expected);
        }
        sessions.end(&[session], ttl).await.expect("end");
        let (status, found) = sessions.status_along(session, ttl, &along).await;
        assert_eq!(status.unwrap(), SessionStatus::Ended);
        assert_eq!(found, expected);

        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(sessions.key(session))
            .arg(&set)
            .query_async(&mut conn)
            .await;
    }

    #[test]
    fn cache_entries_round_trip() {
        let user = Uuid::now_v7();
        for status in [
            SessionStatus::Ended,
            SessionStatus::Live {
                user,
                role: Role::Admin,
            },
            SessionStatus::Live {
                user,
                role: Role::Viewer,
            },
        ] {
            assert_eq!(decode(&encode(status)), Some(status));
        }
        assert_eq!(decode("live:not-a-uuid:admin"), None);
        assert_eq!(decode("1"), None);
    }
}
