//! Exponential backoff for dependencies that are not up yet.

use std::{future::Future, time::Duration};

/// Retries `op` with doubling delays (capped at 5 s) until it succeeds or
/// `attempts` are used up, logging each failure with `what`.
pub async fn with_backoff<T, E, F, Fut>(what: &str, attempts: u32, mut op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < attempts => {
                tracing::warn!(%e, attempt, "{what} failed, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
