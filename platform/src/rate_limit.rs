//! Fixed-window counters in Redis, shared by every replica: limits on what a
//! client or user may do per window, enforced by the service that does it,
//! so they hold whichever door a call comes through.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::quota_headers::{self, Quota};
use tonic::Status;
use tonic_types::ErrorDetails;

/// A limit was reached; the window ends after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests; retry in {} s", retry_after.as_secs())]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo`, which the gateway turns
/// into 429 and `Retry-After`.
impl From<RateLimited> for Status {
    fn from(limited: RateLimited) -> Self {
        let mut details = ErrorDetails::new();
        details.set_retry_info(Some(limited.retry_after));
        crate::error_info::with_details(
            tonic::Code::ResourceExhausted,
            crate::error_info::reason::RATE_LIMITED,
            &[],
            limited.to_string(),
            details,
        )
    }
}

/// One limit: at most `limit` counted events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub limit: u32,
    pub window: Duration,
}

impl Limit {
    /// `setting` per the window every limit shares
    /// (`RATE_LIMIT_WINDOW_SECS`, at least one second).
    pub fn from_env(setting: &crate::config::Setting) -> Result<Self, crate::config::ConfigError> {
        let window_setting = crate::settings::RATE_LIMIT_WINDOW_SECS;
        let window = window_setting.secs()?;
        window_setting.ensure(!window.is_zero(), 0, "must be at least 1")?;
        Ok(Self {
            limit: setting.get()?,
            window,
        })
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: ConnectionManager,
    prefix: String,
}

impl RateLimiter {
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
        }
    }

    fn key(&self, scope: &str, subject: &str) -> String {
        format!("{}ratelimit:{scope}:{subject}", self.prefix)
    }

    /// Counts one event against `scope:subject` and errs once more than
    /// `limit.limit` fell in the window. Atomic, so concurrent callers can
    /// never all pass a budget with one slot left. The budget as it stands
    /// is reported to the caller in the rate-limit headers
    /// ([`crate::quota_headers`]), under the name `scope`.
    pub async fn hit(
        &self,
        scope: &'static str,
        subject: &str,
        limit: Limit,
    ) -> Result<(), RateLimited> {
        let counted = self.incr(&self.key(scope, subject), limit.window).await;
        if let Some((count, ttl)) = counted {
            quota_headers::report(Quota {
                policy: scope,
                limit: limit.limit,
                window: limit.window,
                remaining: u64::from(limit.limit).saturating_sub(count),
                reset: Duration::from_secs(u64::try_from(ttl).unwrap_or(0)),
            });
        }
        verdict(counted, limit)
    }

    /// [`Self::hit`] for a budget whose state is nobody else's business
    /// (one account's failed logins): not reported in the headers.
    pub async fn hit_unreported(
        &self,
        scope: &str,
        subject: &str,
        limit: Limit,
    ) -> Result<(), RateLimited> {
        verdict(
            self.incr(&self.key(scope, subject), limit.window).await,
            limit,
        )
    }

    /// Takes back one event counted by [`Self::hit`] (an attempt reserved
    /// a failure and then succeeded). Never creates a key: a window that
    /// ended meanwhile stays ended.
    pub async fn release(&self, scope: &str, subject: &str) {
        quota_headers::report_released(scope);
        const DECR_IF_PRESENT: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then \
             return redis.call('DECR', KEYS[1]) end return 0";
        let mut conn = self.redis.clone();
        let result: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(DECR_IF_PRESENT)
            .arg(1)
            .arg(self.key(scope, subject))
            .query_async(&mut conn)
            .await;
        if let Err(e) = result {
            fail_open(&e);
        }
    }

    /// Forgets `scope:subject`'s count (the owner proved themselves).
    pub async fn reset(&self, scope: &str, subject: &str) {
        let mut conn = self.redis.clone();
        let result: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.key(scope, subject))
            .query_async(&mut conn)
            .await;
        if let Err(e) = result {
            fail_open(&e);
        }
    }

    /// The count after one more event and the seconds left in the window.
    async fn incr(&self, key: &str, window: Duration) -> Option<(u64, i64)> {
        let mut conn = self.redis.clone();
        // One round trip; EXPIRE NX starts the window on the first event only.
        let result: redis::RedisResult<(u64, i64, i64)> = redis::pipe()
            .atomic()
            .incr(key, 1u64)
            .cmd("EXPIRE")
            .arg(key)
            .arg(window.as_secs().max(1))
            .arg("NX")
            .cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await;
        match result {
            Ok((count, _, ttl)) => Some((count, ttl)),
            Err(e) => {
                fail_open(&e);
                None
            }
        }
    }
}

fn verdict(counted: Option<(u64, i64)>, limit: Limit) -> Result<(), RateLimited> {
    match counted {
        Some((count, ttl)) if count > u64::from(limit.limit) => Err(limited(ttl)),
        _ => Ok(()),
    }
}

fn limited(ttl_secs: i64) -> RateLimited {
    RateLimited {
        retry_after: Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(1).max(1)),
    }
}

/// An outage of the limiter must not lock everyone out: limits are a
/// brake, authentication does not depend on them.
fn fail_open(error: &redis::RedisError) {
    tracing::warn!(error = %error, "rate limiter unavailable; allowing request");
}
