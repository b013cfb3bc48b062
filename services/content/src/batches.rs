//! Opportunistic batching of writes. Requests hand their work to a few
//! writer tasks; a writer takes everything that is waiting when it becomes
//! free and writes it at once. Alone, a request is written immediately, as
//! it would be on its own; under load, the requests that arrived while the
//! writers were busy share one round trip and one commit. Nothing waits for
//! a batch to fill.

use std::{collections::HashMap, hash::Hash, panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;
use tokio::sync::{Mutex, mpsc, oneshot};

use quill_events::outbox::OutboxRow;

use crate::error::ContentError;

/// Batches written at once. Two keep a batch being collected while another
/// is in the database; more would only split the same load into smaller
/// batches, each with its own round trips and commit.
pub(crate) const WRITERS: usize = 2;

/// The most items in one batch: past a few dozen the per-batch costs are
/// already negligible, and a larger statement only delays its first answer.
pub(crate) const MAX_BATCH: usize = 64;

/// Items waiting for a writer before submissions wait for room.
pub(crate) const QUEUED: usize = 1024;

/// Work waiting for a writer, and where its answer goes.
type Queued<T, R> = (T, oneshot::Sender<R>);

/// The handle requests submit through; writers stop when the last handle
/// is dropped and the queue has drained.
pub(crate) struct Batches<T, R> {
    queue: mpsc::Sender<Queued<T, R>>,
}

/// Why a submission got no answer.
#[derive(Debug, thiserror::Error)]
#[error("the batch writers have stopped")]
pub(crate) struct Stopped;

impl<T: Send + 'static, R: Send + 'static> Batches<T, R> {
    /// Starts `writers` tasks, each writing up to `max_batch` items at a
    /// time with `write`, which answers every item of its batch, in order.
    /// `queued` bounds the items waiting: a submission past it waits for
    /// room, which pushes back on the callers rather than growing memory.
    /// Batch sizes are recorded as `write_batch_size{batch=name}`.
    pub(crate) fn start<W, F>(
        name: &'static str,
        writers: usize,
        max_batch: usize,
        queued: usize,
        write: W,
    ) -> Self
    where
        W: Fn(Vec<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Vec<R>> + Send,
    {
        let (queue, waiting) = mpsc::channel::<Queued<T, R>>(queued.max(1));
        // Whichever writer holds the receiver collects the next batch; the
        // others wait their turn while it is written.
        let waiting = Arc::new(Mutex::new(waiting));
        let sizes = quill_platform::metrics::get()
            .write_batch_size
            .with_label_values(&[name]);
        for _ in 0..writers.max(1) {
            let waiting = Arc::clone(&waiting);
            let write = write.clone();
            let sizes = sizes.clone();
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(max_batch);
                loop {
                    if waiting.lock().await.recv_many(&mut batch, max_batch).await == 0 {
                        return;
                    }
                    // A caller that gave up while its item waited (a
                    // cancelled request) gets nothing written, as when it
                    // gives up waiting for a connection.
                    batch.retain(|(_, reply)| !reply.is_closed());
                    if batch.is_empty() {
                        continue;
                    }
                    sizes.observe(batch.len() as f64);
                    let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
                        batch.drain(..).unzip();
                    // A panic fails this batch's callers (their answers are
                    // dropped), not the writer: it goes on with the next.
                    match AssertUnwindSafe(write(items)).catch_unwind().await {
                        Ok(answers) => {
                            debug_assert_eq!(answers.len(), replies.len(), "one answer per item");
                            // One that gave up during the write is not
                            // waiting: its work is done all the same.
                            for (reply, answer) in replies.into_iter().zip(answers) {
                                let _ = reply.send(answer);
                            }
                        }
                        Err(_) => tracing::error!(
                            batch = name,
                            items = replies.len(),
                            "a batch writer panicked; its batch failed"
                        ),
                    }
                }
            });
        }
        Self { queue }
    }

    /// Writes `item` in the next batch a writer takes, and answers as that
    /// writer did.
    pub(crate) async fn submit(&self, item: T) -> Result<R, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((item, reply)).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

/// A batch that wrote nothing, with its items.
pub(crate) struct Failed<T> {
    pub error: ContentError,
    pub items: Vec<T>,
}

impl<T> Failed<T> {
    pub(crate) fn of(error: ContentError, items: Vec<T>) -> Self {
        Self { error, items }
    }
}

/// Answers each item with `write_together`, which writes all of them or
/// none. When the database refused the batch for what it held, each item is
/// written again on its own, so that one bad item fails only its own
/// request; a failure to reach the database fails them all.
pub(crate) async fn each_alone_if_rejected<T, O, F>(
    name: &'static str,
    items: Vec<T>,
    write_together: impl Fn(Vec<T>) -> F,
) -> Vec<Result<O, ContentError>>
where
    F: Future<Output = Result<Vec<O>, Failed<T>>>,
{
    match write_together(items).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(Failed { error, items }) if items.len() > 1 && rejected(&error) => {
            tracing::warn!(%error, batch = name, count = items.len(), "a batch failed; writing each alone");
            let mut answers = Vec::with_capacity(items.len());
            for item in items {
                let answer = write_together(vec![item]).await;
                answers.push(
                    answer
                        .map(|mut outcomes| outcomes.remove(0))
                        .map_err(|failed| failed.error),
                );
            }
            answers
        }
        Err(Failed { error, items }) => {
            let message = error.to_string();
            let mut answers = vec![Err(error)];
            answers.extend((1..items.len()).map(|_| Err(ContentError::Internal(message.clone()))));
            answers
        }
    }
}

/// A write span for each item whose event is about to be written, each a
/// child of its request's span, so that every request's trace shows the
/// write it waited for. They end when dropped: after the write.
pub(crate) fn write_spans<'a>(
    items: impl IntoIterator<Item = (&'a tracing::Span, Option<&'a OutboxRow>)>,
) -> Vec<tracing::Span> {
    items
        .into_iter()
        .filter_map(|(request, event)| {
            let event = event?;
            Some(request.in_scope(|| event.write_span()))
        })
        .collect()
}

/// What a batch's statement stored, by `key`. The same statement wrote
/// each stored row's event to the outbox, so the relays are woken when it
/// stored any.
pub(crate) fn stored_by<K: Eq + Hash, R>(rows: Vec<R>, key: impl Fn(&R) -> K) -> HashMap<K, R> {
    if !rows.is_empty() {
        quill_events::outbox::written();
    }
    rows.into_iter().map(|row| (key(&row), row)).collect()
}

/// The database refused a statement for what it was asked to write (data
/// it cannot take, a constraint, a trigger's exception) or for how it met
/// another transaction (a deadlock): an item alone may pass. Anything else
/// (the server shutting down, out of connections, a cancelled statement)
/// would fail each item again.
fn rejected(error: &ContentError) -> bool {
    let ContentError::Database(sqlx::Error::Database(error)) = error else {
        return false;
    };
    error.code().is_some_and(|code| {
        code.starts_with("22")
            || code.starts_with("23")
            || code == "P0001"
            || code == "40P01"
            || code == "40001"
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{sync::Semaphore, task::JoinHandle};

    use super::*;

    type Gated = Arc<Batches<u32, u32>>;

    /// A batcher of one writer whose writes each wait for a permit of the
    /// returned semaphore (none to start with), report their batch, and
    /// answer ten times each item.
    fn gated(max_batch: usize) -> (Gated, Arc<Semaphore>, mpsc::UnboundedReceiver<Vec<u32>>) {
        let gate = Arc::new(Semaphore::new(0));
        let (seen, batches) = mpsc::unbounded_channel();
        let writer_gate = Arc::clone(&gate);
        let batcher = Batches::start("test", 1, max_batch, 64, move |items: Vec<u32>| {
            let gate = Arc::clone(&writer_gate);
            let seen = seen.clone();
            async move {
                seen.send(items.clone())
                    .expect("the test reads every batch");
                gate.acquire().await.expect("never closed").forget();
                items.into_iter().map(|n| n * 10).collect()
            }
        });
        (Arc::new(batcher), gate, batches)
    }

    fn submit(batcher: &Gated, item: u32) -> JoinHandle<Result<u32, Stopped>> {
        let batcher = Arc::clone(batcher);
        tokio::spawn(async move { batcher.submit(item).await })
    }

    /// Until `count` submissions wait in the queue.
    async fn queued(batcher: &Gated, count: usize) {
        while batcher.queue.max_capacity() - batcher.queue.capacity() < count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// While the only writer is busy, what arrives waits and is then
    /// written together: the second batch holds everything submitted
    /// during the first, and every caller gets its own answer.
    #[tokio::test]
    async fn what_arrives_during_a_write_is_written_together() {
        let (batcher, gate, mut batches) = gated(64);
        let first = submit(&batcher, 1);
        assert_eq!(batches.recv().await, Some(vec![1]));
        let rest: Vec<_> = (2..=6).map(|n| submit(&batcher, n)).collect();
        queued(&batcher, 5).await;
        gate.add_permits(2);

        assert_eq!(batches.recv().await, Some(vec![2, 3, 4, 5, 6]));
        assert_eq!(first.await.expect("joined").expect("answered"), 10);
        for (n, answer) in (2..=6).zip(rest) {
            assert_eq!(answer.await.expect("joined").expect("answered"), n * 10);
        }
    }

    /// A batch is never larger than asked: the rest waits for the next.
    #[tokio::test]
    async fn a_batch_holds_at_most_max_batch_items() {
        let (batcher, gate, mut batches) = gated(3);
        let calls: Vec<_> = (0..8).map(|n| submit(&batcher, n)).collect();
        gate.add_permits(8);
        for call in calls {
            call.await.expect("joined").expect("answered");
        }
        drop(batcher);
        let mut sizes = Vec::new();
        while let Some(batch) = batches.recv().await {
            sizes.push(batch.len());
        }
        assert!(sizes.iter().all(|&size| size <= 3), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 8);
    }

    /// A writer that panics fails its batch's callers and goes on: the
    /// next submission is written.
    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_not_the_writer() {
        let batcher = Batches::start("test", 1, 64, 64, |items: Vec<u32>| async move {
            assert!(!items.contains(&0), "zero is poison");
            items
        });
        assert!(batcher.submit(0).await.is_err());
        assert_eq!(batcher.submit(1).await.expect("the writer lives on"), 1);
    }

    /// What a caller gave up on while it waited is never written.
    #[tokio::test]
    async fn an_item_whose_caller_gave_up_is_not_written() {
        let (batcher, gate, mut batches) = gated(64);
        let first = submit(&batcher, 1);
        assert_eq!(batches.recv().await, Some(vec![1]));
        let abandoned = submit(&batcher, 2);
        queued(&batcher, 1).await;
        abandoned.abort();
        assert!(abandoned.await.expect_err("aborted").is_cancelled());
        // Enough for 2 too, had it been written.
        gate.add_permits(3);
        first.await.expect("joined").expect("answered");
        assert_eq!(batcher.submit(3).await.expect("answered"), 30);
        assert_eq!(batches.recv().await, Some(vec![3]), "2 was never written");
    }
}
