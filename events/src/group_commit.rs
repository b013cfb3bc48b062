//! Group commit for a consumer: deliveries that arrive while a transaction
//! is running are applied together in the next one, so a busy queue costs
//! one commit (one WAL flush) per batch instead of one per event.
//!
//! Each delivery still settles on its own (ack, retry, park, requeue): its
//! task hands the event to [`GroupCommit::apply`] and gets back whether it
//! was applied, a duplicate, or why it failed. A batch records every
//! `event_id` in one statement and runs each handler after a savepoint: a
//! handler that fails is rolled back to its savepoint and reported, exactly
//! as if it had run alone, and the others commit; what the handlers that
//! succeeded deferred ([`EventHandler::finish`]) is written last, in one go,
//! so the locks it takes are held only until the commit just after. Only
//! when the batch itself fails (at begin, in `finish`, at commit, on a lost
//! connection, on a deadlock between its events' locks and another
//! transaction's) does every event run again alone, so errors are
//! classified exactly as for a single event. A batch stops taking its next
//! event after [`BATCH_BUDGET`] and commits, and the events it did not
//! start go on in the next; events a handler calls slow
//! ([`EventHandler::batchable`]) never join one.

use std::{collections::HashSet, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::FutureExt;
use quill_platform::request_id;
use quill_proto::events::v1::Envelope;
use sqlx::PgPool;
use tokio::{
    sync::{Mutex, Semaphore, mpsc, oneshot},
    time::Instant,
};
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::consumer::{EventHandler, HandlerError};

/// Transactions a consumer runs at once. More than one keeps a handler that
/// waits on another service from holding up every other event.
const WORKERS: usize = 2;
/// The most events in one transaction: each has a savepoint, and PostgreSQL
/// slows every snapshot once a transaction has more than 64 subtransactions.
const MAX_BATCH: usize = 32;
/// How long a batch may run before it commits what it has: the locks it
/// holds and the events waiting behind it are bounded by this.
const BATCH_BUDGET: Duration = Duration::from_millis(200);

/// One event waiting for a transaction, with what its handler prepared.
struct Job<P> {
    event_id: Uuid,
    envelope: Arc<Envelope>,
    prepared: P,
    /// The delivery's span: the handler's spans and logs belong under it.
    span: Span,
    done: oneshot::Sender<Result<bool, HandlerError>>,
}

/// Applies events for one consumer, batching those that wait together.
pub(crate) struct GroupCommit<H: EventHandler> {
    pool: PgPool,
    handler: Arc<H>,
    /// The `consumer` recorded beside each `event_id`: the queue's name.
    consumer: String,
    max_batch: usize,
    sender: mpsc::Sender<Job<H::Prepared>>,
    jobs: Mutex<mpsc::Receiver<Job<H::Prepared>>>,
    /// Events between their preparation and their result: a batch delivery
    /// brings many events at once, and the prefetch bounds deliveries only.
    in_flight: Semaphore,
}

impl<H: EventHandler> GroupCommit<H> {
    /// At most `in_flight` events are applied at once (the consumer's
    /// prefetch), and a batch holds at most that many too.
    pub(crate) fn new(pool: PgPool, handler: Arc<H>, consumer: &str, in_flight: usize) -> Self {
        let in_flight = in_flight.max(1);
        let max_batch = in_flight.min(MAX_BATCH);
        let (sender, jobs) = mpsc::channel(max_batch);
        Self {
            pool,
            handler,
            consumer: consumer.to_owned(),
            max_batch,
            sender,
            jobs: Mutex::new(jobs),
            in_flight: Semaphore::new(in_flight),
        }
    }

    /// Applies `envelope` once; returns whether it ran (false: a
    /// duplicate). Only resolves while [`Self::run`] is polled.
    ///
    /// The handler prepares first, here, outside any transaction and
    /// concurrently with the other deliveries in flight.
    pub(crate) async fn apply(
        &self,
        event_id: Uuid,
        envelope: Arc<Envelope>,
    ) -> Result<bool, HandlerError> {
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Err(HandlerError::unavailable("the consumer is stopping"));
        };
        let prepared = match request_id::scope(
            envelope.request_id.clone(),
            AssertUnwindSafe(self.handler.prepare(&envelope)).catch_unwind(),
        )
        .await
        .unwrap_or_else(|_| Err(HandlerError::transient("event handler panicked")))
        {
            Ok(prepared) => prepared,
            // A redelivery of an applied event needs no preparation: its
            // failure must not pause the consumer or spend an attempt.
            Err(e) => {
                return if self.applied(event_id).await {
                    Ok(false)
                } else {
                    Err(e)
                };
            }
        };
        let (done, result) = oneshot::channel();
        let job = Job {
            event_id,
            envelope,
            prepared,
            span: Span::current(),
            done,
        };
        if !self.handler.batchable(&job.envelope, &job.prepared) {
            return self.apply_alone(&job).await;
        }
        if let Err(mpsc::error::SendError(job)) = self.sender.send(job).await {
            return self.apply_alone(&job).await;
        }
        result.await.unwrap_or_else(|_| {
            Err(HandlerError::transient(
                "event dropped before it was applied",
            ))
        })
    }

    /// Whether `event_id` is recorded as processed; `false` when that
    /// cannot be learned (the event's own error then stands).
    async fn applied(&self, event_id: Uuid) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)",
        )
        .bind(event_id)
        .fetch_one(&self.pool)
        .await
        .unwrap_or(false)
    }

    /// Runs the transactions; never returns by itself.
    pub(crate) async fn run(&self) {
        futures::future::join_all((0..WORKERS).map(|_| self.work())).await;
    }

    async fn work(&self) {
        loop {
            let batch = {
                let mut jobs = self.jobs.lock().await;
                let Some(first) = jobs.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < self.max_batch {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                batch
            };
            self.apply_batch(batch).await;
        }
    }

    async fn apply_batch(&self, mut batch: Vec<Job<H::Prepared>>) {
        // Those a transaction did not start (past its budget) are the next
        // one's, on this worker: running them alone at once would put as
        // many transactions in flight, waiting on each other's locks.
        while batch.len() > 1 {
            let Ok(results) = self.apply_together(&batch).await else {
                break;
            };
            let rest = batch.split_off(results.len());
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.done.send(result);
            }
            batch = rest;
        }
        futures::future::join_all(batch.into_iter().map(|job| async move {
            let result = self.apply_alone(&job).await;
            let _ = job.done.send(result);
        }))
        .await;
    }

    /// The batch in one transaction, each handler that may write behind a
    /// savepoint, until the budget is spent; returns the results of the
    /// events it ran, in order. An error here is the transaction's: nothing
    /// was applied.
    async fn apply_together(
        &self,
        batch: &[Job<H::Prepared>],
    ) -> Result<Vec<Result<bool, HandlerError>>, BatchAborted> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        // Sorted, so two batches holding the same redelivered ids take their
        // locks in one order and cannot deadlock.
        let mut ids: Vec<Uuid> = batch.iter().map(|job| job.event_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut fresh: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO processed_events (event_id, consumer)
             SELECT id, $2 FROM unnest($1::uuid[]) AS id
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id",
        )
        .bind(&ids)
        .bind(&self.consumer)
        .fetch_all(&mut *tx)
        .instrument(crate::db_span("INSERT", "processed_events"))
        .await?
        .into_iter()
        .collect();
        let mut results = Vec::with_capacity(batch.len());
        let mut deferred = Vec::with_capacity(batch.len());
        for job in batch {
            if !results.is_empty() && started.elapsed() >= BATCH_BUDGET {
                // Unstarted events are not this transaction's: their ids go.
                let unstarted: Vec<Uuid> = batch[results.len()..]
                    .iter()
                    .map(|job| job.event_id)
                    .filter(|id| fresh.contains(id))
                    .collect();
                sqlx::query("DELETE FROM processed_events WHERE event_id = ANY($1)")
                    .bind(&unstarted)
                    .execute(&mut *tx)
                    .await?;
                break;
            }
            // The first of two copies of one event in a batch runs it.
            if !fresh.remove(&job.event_id) {
                results.push(Ok(false));
                continue;
            }
            let isolated = self.handler.writes_in_handle(&job.envelope, &job.prepared);
            if isolated {
                sqlx::query("SAVEPOINT event").execute(&mut *tx).await?;
            }
            let mut own = H::Deferred::default();
            let handled = request_id::scope(
                job.envelope.request_id.clone(),
                AssertUnwindSafe(self.handler.handle(
                    &mut tx,
                    &job.envelope,
                    &job.prepared,
                    &mut own,
                ))
                .catch_unwind(),
            )
            .instrument(job.span.clone())
            .await
            .unwrap_or_else(|_| Err(HandlerError::transient("event handler panicked")));
            match handled {
                // Fails if the handler left the transaction aborted (an
                // error it swallowed): the batch then runs alone.
                Ok(()) => {
                    if isolated {
                        sqlx::query("RELEASE SAVEPOINT event")
                            .execute(&mut *tx)
                            .await?;
                    }
                    deferred.push(own);
                    results.push(Ok(true));
                }
                // Lock order between this batch's events and another
                // transaction: not the event's fault, so not an attempt.
                Err(e) if is_lock_conflict(&e) => return Err(BatchAborted),
                Err(e) => {
                    // Rolling back keeps the savepoint: released, or the
                    // rest of the batch would run nested inside it. Without
                    // one, the handler wrote nothing to undo (and a failed
                    // statement fails the next one: the batch runs alone).
                    // Its event id goes too: a retry must find it unrecorded.
                    if isolated {
                        sqlx::raw_sql("ROLLBACK TO SAVEPOINT event; RELEASE SAVEPOINT event")
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("DELETE FROM processed_events WHERE event_id = $1")
                        .bind(job.event_id)
                        .execute(&mut *tx)
                        .await?;
                    results.push(Err(e));
                }
            }
        }
        // Its failure is the batch's: each event runs again alone, where
        // its own deferred writes fail or not.
        let finished = AssertUnwindSafe(self.handler.finish(&mut tx, deferred))
            .catch_unwind()
            .await
            .map_err(|_| BatchAborted)?
            .map_err(|_| BatchAborted)?;
        // A handler without a savepoint, or `finish`, that swallowed a
        // failed statement left the transaction aborted, which would
        // "commit" as a rollback without an error, and `committed` would
        // then act on writes that never were: this statement fails on it.
        sqlx::query("SELECT 1").execute(&mut *tx).await?;
        tx.commit().await?;
        let applied: Vec<&Envelope> = batch
            .iter()
            .zip(&results)
            .filter(|(_, result)| matches!(result, Ok(true)))
            .map(|(job, _)| &*job.envelope)
            .collect();
        let _ = AssertUnwindSafe(self.handler.committed(&applied, finished))
            .catch_unwind()
            .await;
        Ok(results)
    }

    /// Runs the handler unless `event_id` was already processed; returns
    /// whether it ran. A concurrent duplicate waits on the first one's row
    /// lock and then sees the conflict, so the two never both apply.
    ///
    /// A failure to begin or to record the event cannot depend on the event:
    /// it is [`HandlerError::Unavailable`]. A failed commit is classified like
    /// any database error: it may be the handler's own conflict (a deferred
    /// constraint, a serialization failure), which must count as an attempt.
    async fn apply_alone(&self, job: &Job<H::Prepared>) -> Result<bool, HandlerError> {
        async {
            let mut tx = self.pool.begin().await.map_err(HandlerError::unavailable)?;
            let inserted = sqlx::query(
                "INSERT INTO processed_events (event_id, consumer) VALUES ($1, $2)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(job.event_id)
            .bind(&self.consumer)
            .execute(&mut *tx)
            .instrument(crate::db_span("INSERT", "processed_events"))
            .await
            .map_err(HandlerError::unavailable)?
            .rows_affected()
                == 1;
            let finished = if inserted {
                // A panicking handler must not take the consumer (and every
                // other in-flight delivery) down with it: a failed run.
                let mut deferred = H::Deferred::default();
                let finished = request_id::scope(job.envelope.request_id.clone(), async {
                    AssertUnwindSafe(async {
                        self.handler
                            .handle(&mut tx, &job.envelope, &job.prepared, &mut deferred)
                            .await?;
                        self.handler.finish(&mut tx, vec![deferred]).await
                    })
                    .catch_unwind()
                    .await
                })
                .await
                .map_err(|_| HandlerError::transient("event handler panicked"))??;
                // A transaction a handler left aborted would "commit" as a
                // rollback without an error: this statement fails on it.
                sqlx::query("SELECT 1").execute(&mut *tx).await?;
                Some(finished)
            } else {
                None
            };
            tx.commit().await?;
            if let Some(finished) = finished {
                let _ = AssertUnwindSafe(self.handler.committed(&[&*job.envelope], finished))
                    .catch_unwind()
                    .await;
            }
            Ok(inserted)
        }
        .instrument(job.span.clone())
        .await
    }
}

/// The batch's transaction failed as a whole; its events run again alone.
struct BatchAborted;

impl From<sqlx::Error> for BatchAborted {
    fn from(_: sqlx::Error) -> Self {
        Self
    }
}

/// A deadlock or serialization failure: PostgreSQL's verdict on how
/// transactions met, not on the event.
fn is_lock_conflict(error: &HandlerError) -> bool {
    let (HandlerError::Transient(e) | HandlerError::Permanent(e) | HandlerError::Unavailable(e)) =
        error;
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}
