//! Graceful shutdown as one cancellation tree. A process has one root
//! [`CancellationToken`], cancelled on SIGTERM or Ctrl-C ([`on_signal`]);
//! whatever must stop with it holds a child token (a live stream, the HTTP
//! server) and background loops run in a [`Background`], whose token is
//! cancelled only once the servers have drained, so the work of the last
//! requests (their events, their mail) still goes out. Every wait for work
//! to finish is bounded by [`DRAIN_TIMEOUT`].

use std::{future::Future, time::Duration};

pub use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long in-flight work gets to finish once asked to stop: the calls'
/// drain and then the background loops' each get this much, which the
/// Kubernetes grace period (50 s) covers with `SHUTDOWN_DELAY_SECS` (5 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A root token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signal().await;
        cancel.cancel();
    });
    token
}

/// Resolves on the first SIGTERM or SIGINT.
async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining");
}

/// Sleeps for `delay`; returns `true` if `token` was cancelled first.
pub async fn sleep_or_cancelled(delay: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = token.cancelled() => true,
    }
}

/// The background loops of a process (outbox relay, event consumer, mail
/// sender, listeners). Each gets a child of one token, cancelled by
/// [`Background::drain`].
#[derive(Debug, Default)]
pub struct Background {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task(token)`; the loop must return soon after `token` is cancelled.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.token.child_token()));
    }

    /// Asks every loop to stop and waits for them, at most `within`;
    /// returns whether they all finished.
    pub async fn drain(&self, within: Duration) -> bool {
        self.token.cancel();
        self.tasks.close();
        let drained = tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                unfinished = self.tasks.len(),
                "background work did not drain within {within:?}"
            );
        }
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_drain_stops_every_loop_and_is_bounded() {
        let background = Background::new();
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..2 {
            let stopped = std::sync::Arc::clone(&stopped);
            background.spawn(|token| async move {
                token.cancelled().await;
                stopped.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        assert!(background.drain(Duration::from_secs(1)).await);
        assert_eq!(stopped.load(std::sync::atomic::Ordering::SeqCst), 2);

        let stuck = Background::new();
        stuck.spawn(|_ignored| std::future::pending());
        assert!(!stuck.drain(Duration::from_secs(1)).await);
    }
}
