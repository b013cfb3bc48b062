//! Fixed-window rate limits in Redis, shared by every gateway replica.

use std::{net::IpAddr, time::Duration};

use redis::aio::ConnectionManager;

use crate::error::ApiError;

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

    /// Counts one hit against `scope:subject`; errs with 429 and the seconds
    /// until the window ends once more than `limit` hits fell in it.
    pub async fn hit(
        &self,
        scope: &str,
        subject: &str,
        limit: u32,
        window: Duration,
    ) -> Result<(), ApiError> {
        let key = format!("{}ratelimit:{scope}:{subject}", self.prefix);
        let mut conn = self.redis.clone();
        // One round trip; EXPIRE NX starts the window on the first hit only.
        let result: redis::RedisResult<(u64, i64, i64)> = redis::pipe()
            .atomic()
            .incr(&key, 1u64)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(window.as_secs().max(1))
            .arg("NX")
            .cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await;
        match result {
            Ok((count, _, ttl)) if count > u64::from(limit) => {
                Err(ApiError::rate_limited(u64::try_from(ttl).unwrap_or(1)))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                // Failing open: an outage of the limiter must not lock
                // everyone out of logging in.
                tracing::warn!(error = %e, "rate limiter unavailable; allowing request");
                Ok(())
            }
        }
    }

    pub async fn hit_ip(
        &self,
        scope: &str,
        ip: IpAddr,
        limit: u32,
        window: Duration,
    ) -> Result<(), ApiError> {
        self.hit(&format!("{scope}:ip"), &ip.to_string(), limit, window)
            .await
    }
}
