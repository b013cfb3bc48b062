//! The one backoff every reconnect loop and start-up retry uses: exponential
//! from 100 ms to 5 s, with jitter so that replicas which lost a dependency
//! together do not come back at it in lockstep. backon adds up to one more
//! delay of jitter; the result is clamped to the maximum.

use std::{future::Future, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

fn builder() -> ExponentialBuilder {
    builder_between(FIRST, MAX)
}

fn builder_between(first: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max.max(first))
        .with_jitter()
        .without_max_times()
}

/// Delays for a loop that reconnects for as long as it runs: each failure
/// waits [`Backoff::next_delay`], a success calls [`Backoff::reset`], so a
/// long outage costs little and a blip recovers fast.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Self::between(FIRST, MAX)
    }

    /// Delays from `first`, doubling up to `max`, each plus up to its own
    /// length of jitter.
    pub fn between(first: Duration, max: Duration) -> Self {
        let builder = builder_between(first, max);
        Self {
            delays: builder.build(),
            builder,
            max: max.max(first),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        // Unbounded (`without_max_times`): the iterator never ends.
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// The delay before retry `n` (0 for the first), for a schedule kept
    /// elsewhere (a row's attempt count) rather than in this value.
    pub fn nth_delay(mut self, n: usize) -> Duration {
        (0..n).for_each(|_| {
            self.next_delay();
        });
        self.next_delay()
    }

    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Retries `op` with [`Backoff`]'s delays until it succeeds or `attempts`
/// are used up, logging each failure with `what`: for dependencies that are
/// not up yet when a process starts.
pub async fn with_backoff<T, E, F, Fut>(what: &str, attempts: u32, op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let retries = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
    op.retry(builder().with_max_times(retries))
        .sleep(tokio::time::sleep)
        .notify(|e: &E, delay: Duration| {
            tracing::warn!(error = %e, "{what} failed, retrying in {delay:?}");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_restart_after_a_reset() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        // Jitter adds up to one base delay on top of it.
        assert!((FIRST..FIRST * 2).contains(&delays[0]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= MAX), "{delays:?}");
        assert_eq!(delays[11], MAX, "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() < FIRST * 2);
    }

    #[test]
    fn two_backoffs_do_not_wait_in_lockstep() {
        let mut a = Backoff::new();
        let mut b = Backoff::new();
        let same = (0..8).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 8);
    }

    #[tokio::test(start_paused = true)]
    async fn with_backoff_gives_up_after_its_attempts() {
        let mut calls = 0;
        let result: Result<(), &str> = with_backoff("nothing", 3, || {
            calls += 1;
            async { Err("down") }
        })
        .await;
        assert_eq!(result, Err("down"));
        assert_eq!(calls, 3);
    }
}
