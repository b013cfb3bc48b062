//! The event backbone against the real PostgreSQL and RabbitMQ: outbox,
//! relay, consumer, retries, DLQ, and broker outages.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use futures::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use prost::Message;
use quill_events::{
    Consumer, EventHandler, EventsConfig, HandlerError, OutboxRelay, Published, Topology,
    async_trait, backlog, broker, catalog, consumer::attempts, enqueue, legacy, new_envelope,
    outbox, testing::OUTBOX_AND_INBOX_SQL, testing::TestBroker,
};
use quill_platform::{shutdown::CancellationToken, testing::TcpProxy};
use quill_proto::events::v1::{
    Envelope, UserFollowed, UserRegistered, UserSnapshot, envelope::Payload,
};
use quill_server::testing::{TestDb, postgres_server_url};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use tokio::{
    sync::{Notify, Semaphore},
    task::JoinHandle,
};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(8);

pub(crate) async fn database() -> anyhow::Result<(TestDb, PgPool)> {
    let db = TestDb::new("events");
    let pool = db.connect(10).await;
    sqlx::raw_sql(OUTBOX_AND_INBOX_SQL).execute(&pool).await?;
    sqlx::raw_sql(
        "CREATE TABLE items (id uuid PRIMARY KEY, name text NOT NULL);
         -- No unique key on purpose: a double application would show up.
         CREATE TABLE applied (event_id uuid NOT NULL, routing_key text NOT NULL);
         -- What handlers deferred, written by `finish`.
         CREATE TABLE finished (event_id uuid NOT NULL);",
    )
    .execute(&pool)
    .await?;
    Ok((db, pool))
}

pub(crate) fn followed(n: usize) -> Envelope {
    new_envelope(
        "test",
        Payload::UserFollowed(UserFollowed {
            follower_id: Uuid::new_v4().to_string(),
            follower_username: format!("follower{n}"),
            followee_id: Uuid::new_v4().to_string(),
            followee_username: "followee".into(),
        }),
    )
}

/// Records every event it applies in `applied`, in the consumer's
/// transaction. It can be told to fail on one event, or to hang on one.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    pub(crate) calls: Arc<Mutex<HashMap<String, u32>>>,
    pub(crate) poison: Option<String>,
    pub(crate) panic_on: Option<String>,
    pub(crate) hang_on: Option<(String, Arc<Notify>)>,
    /// These events' preparations signal, then never end.
    pub(crate) stall_prepare: Option<(Vec<String>, Arc<Notify>)>,
    /// This event's preparations after its first find a dependency down.
    pub(crate) prepare_down_after_first: Option<String>,
    pub(crate) prepared: Arc<Mutex<HashMap<String, u32>>>,
    /// This event finds a dependency unavailable on its first n runs.
    pub(crate) unavailable_for: Option<(String, u32)>,
    /// The first run of this event signals `started`, then waits for
    /// `resume` before writing.
    pub(crate) hold_once: Option<(String, Arc<Notify>, Arc<Notify>)>,
    /// `handle` writes nothing (everything is deferred to `finish`), and
    /// says so: it runs without a savepoint.
    pub(crate) read_only: bool,
    /// On this event `handle` runs a statement that fails, and swallows
    /// the error.
    pub(crate) swallow_on: Option<String>,
}

impl Recorder {
    pub(crate) fn calls(&self, event_id: &str) -> u32 {
        self.calls
            .lock()
            .unwrap()
            .get(event_id)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl EventHandler for Recorder {
    type Prepared = ();
    /// The event's id, for `finished`: deferred before the handler may fail.
    type Deferred = Vec<Uuid>;
    type Finished = ();

    async fn prepare(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        let run = {
            let mut prepared = self.prepared.lock().unwrap();
            let run = prepared.entry(envelope.event_id.clone()).or_default();
            *run += 1;
            *run
        };
        if self.prepare_down_after_first.as_deref() == Some(envelope.event_id.as_str()) && run > 1 {
            return Err(HandlerError::unavailable("a dependency is down"));
        }
        if let Some((stalled, started)) = &self.stall_prepare
            && stalled.contains(&envelope.event_id)
        {
            started.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        envelope: &Envelope,
        _: &(),
        deferred: &mut Vec<Uuid>,
    ) -> Result<(), HandlerError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let call = calls.entry(envelope.event_id.clone()).or_default();
            *call += 1;
            *call
        };
        let id = Uuid::parse_str(&envelope.event_id).map_err(HandlerError::permanent)?;
        deferred.push(id);
        if let Some((hold_id, started, resume)) = &self.hold_once
            && hold_id == &envelope.event_id
            && call == 1
        {
            started.notify_one();
            resume.notified().await;
        }
        if self.swallow_on.as_deref() == Some(envelope.event_id.as_str()) {
            let _ = sqlx::query("SELECT 1 / 0").execute(&mut **tx).await;
        }
        if !self.read_only {
            sqlx::query("INSERT INTO applied (event_id, routing_key) VALUES ($1, $2)")
                .bind(id)
                .bind(&envelope.r#type)
                .execute(&mut **tx)
                .await?;
        }
        if let Some((down_id, runs)) = &self.unavailable_for
            && down_id == &envelope.event_id
            && call <= *runs
        {
            return Err(HandlerError::unavailable("a dependency is down"));
        }
        if self.poison.as_deref() == Some(envelope.event_id.as_str()) {
            return Err(HandlerError::transient("this event always fails"));
        }
        if self.panic_on.as_deref() == Some(envelope.event_id.as_str()) {
            panic!("handler bug");
        }
        if let Some((hang_id, started)) = &self.hang_on
            && hang_id == &envelope.event_id
        {
            started.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn finish(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        deferred: Vec<Vec<Uuid>>,
    ) -> Result<(), HandlerError> {
        let ids: Vec<Uuid> = deferred.into_iter().flatten().collect();
        sqlx::query("INSERT INTO finished SELECT unnest($1::uuid[])")
            .bind(&ids)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    fn writes_in_handle(&self, _: &Envelope, _: &()) -> bool {
        !self.read_only
    }

    /// The event that hangs is declared slow: it never joins a batch.
    fn batchable(&self, envelope: &Envelope, _: &()) -> bool {
        self.hang_on
            .as_ref()
            .is_none_or(|(hang_id, _)| hang_id != &envelope.event_id)
    }
}

/// A background task stopped through its cancellation token.
pub(crate) struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    pub(crate) fn spawn<F>(run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        Self {
            task: tokio::spawn(run(stop.clone())),
            stop,
        }
    }

    /// Signals shutdown and waits for the drain to finish.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .context("did not drain within 5 s")??;
        Ok(())
    }
}

pub(crate) fn relay(pool: &PgPool, url: &str, broker: &TestBroker) -> Running {
    let relay = OutboxRelay::new(pool.clone(), url, broker.exchange())
        .poll_interval(Duration::from_millis(20));
    Running::spawn(|shutdown| relay.run(shutdown))
}

/// A consumer with short outage pauses (10 ms up to 100 ms), so outage
/// tests finish fast.
pub(crate) fn consumer(
    pool: &PgPool,
    url: &str,
    topology: &Topology,
    handler: Recorder,
) -> Running {
    let consumer = Consumer::new(pool.clone(), url, topology.clone(), handler)
        .unavailable_backoff(Duration::from_millis(10), Duration::from_millis(100));
    Running::spawn(|shutdown| consumer.run(shutdown))
}

/// Declares `topology` up front: events published before any queue is bound
/// would be dropped by the exchange.
pub(crate) async fn declare(url: &str, topology: &Topology) -> anyhow::Result<()> {
    let conn = broker::connect(url, "test-declare").await?;
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// Publishes raw bytes to the exchange, confirmed, as a misbehaving or
/// repeating producer would.
async fn publish_raw(
    url: &str,
    exchange: &str,
    key: &str,
    payloads: &[Vec<u8>],
) -> anyhow::Result<()> {
    let properties = BasicProperties::default().with_delivery_mode(2);
    publish_raw_as(url, exchange, key, payloads, properties).await
}

/// [`publish_raw`] with these properties on every message.
pub(crate) async fn publish_raw_as(
    url: &str,
    exchange: &str,
    key: &str,
    payloads: &[Vec<u8>],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let conn = broker::connect(url, "test-publisher").await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for payload in payloads {
        let confirmation = channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                payload,
                properties.clone(),
            )
            .await?
            .await?;
        anyhow::ensure!(confirmation.is_ack(), "publish not confirmed");
    }
    conn.close(200, "done".into()).await?;
    Ok(())
}

pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// (rows in `applied`, distinct event ids among them).
pub(crate) async fn applied(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM applied")
            .fetch_one(pool)
            .await?,
    )
}

pub(crate) async fn enqueue_with_item(pool: &PgPool, envelope: &Envelope) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO items (id, name) VALUES ($1, 'x')")
        .bind(Uuid::new_v4())
        .execute(&mut *tx)
        .await?;
    enqueue(&mut tx, envelope).await?;
    outbox::commit(tx).await?;
    Ok(())
}

pub(crate) async fn get_parked(
    url: &str,
    topology: &Topology,
) -> anyhow::Result<lapin::message::Delivery> {
    let conn = broker::connect(url, "test-dlq").await?;
    let channel = conn.create_channel().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = channel
            .basic_get(
                topology.dead_letter_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await?;
        if let Some(message) = got {
            conn.close(200, "done".into()).await?;
            return Ok(message.delivery);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("nothing arrived in {}", topology.dead_letter_queue());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `events_consumed_total` for `topology`'s queue, `user.followed` and `outcome`.
pub(crate) fn consumed_total(topology: &Topology, outcome: &str) -> u64 {
    quill_platform::metrics::get()
        .events_consumed
        .with_label_values(&[topology.queue.as_str(), "user.followed", outcome])
        .get()
}

/// Lets connections into `database` again, or refuses them and ends the
/// ones open (a database outage, as the consumer sees it).
async fn allow_connections(database: &str, allow: bool) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_server_url())).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {allow}"
        )))
        .await?;
    if !allow {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .execute(&mut admin)
            .await?;
    }
    admin.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_change_is_published_and_consumed_and_a_rolled_back_one_is_not()
-> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.*"]);
    declare(&broker.url, &topology).await?;

    let committed = followed(1);
    enqueue_with_item(&pool, &committed).await?;
    let rolled_back = followed(2);
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO items (id, name) VALUES ($1, 'gone')")
        .bind(Uuid::new_v4())
        .execute(&mut *tx)
        .await?;
    enqueue(&mut tx, &rolled_back).await?;
    tx.rollback().await?;
    assert_eq!(backlog(&pool).await?, 1);

    let consumer = consumer(&pool, &broker.url, &topology, Recorder::default());
    let relay = relay(&pool, &broker.url, &broker);
    eventually("the event is applied", || async {
        Ok(applied(&pool).await?.0 >= 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT event_id, routing_key FROM applied")
        .fetch_all(&pool)
        .await?;
    assert_eq!(
        rows,
        vec![(committed.event_id.parse()?, "user.followed".to_owned())]
    );
    let published: bool =
        sqlx::query_scalar("SELECT published_at IS NOT NULL FROM outbox WHERE id = $1")
            .bind(Uuid::parse_str(&committed.event_id)?)
            .fetch_one(&pool)
            .await?;
    assert!(published, "the relay marks the row published");
    assert_eq!(backlog(&pool).await?, 0);
    relay.stop().await?;
    consumer.stop().await?;
    Ok(())
}

/// Connections propose small frames (lapin buffers 32 each way),
/// unless the URL sets `frame_max`; an event larger than a frame still
/// travels, over several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_take_small_frames_and_an_event_larger_than_one_still_travels()
-> anyhow::Result<()> {
    let broker = TestBroker::new();
    let frame_max = |url: String| async move {
        let conn = broker::connect(&url, "test-frames").await?;
        let negotiated = conn.configuration().frame_max();
        conn.close(200, "done".into()).await?;
        anyhow::Ok(negotiated)
    };
    assert_eq!(frame_max(broker.url.clone()).await?, broker::FRAME_MAX);
    let separator = if broker.url.contains('?') { '&' } else { '?' };
    let chosen = format!("{}{separator}frame_max=65536", broker.url);
    assert_eq!(frame_max(chosen).await?, 65_536);

    let (_db, pool) = database().await?;
    let topology = broker.topology("content", &["user.*"]);
    declare(&broker.url, &topology).await?;
    let large = new_envelope(
        "test",
        Payload::UserRegistered(UserRegistered {
            user: Some(UserSnapshot {
                id: Uuid::new_v4().to_string(),
                username: "large".into(),
                bio: Some("x".repeat(3 * broker::FRAME_MAX as usize)),
                ..Default::default()
            }),
        }),
    );
    enqueue_with_item(&pool, &large).await?;
    let consumer = consumer(&pool, &broker.url, &topology, Recorder::default());
    let relay = relay(&pool, &broker.url, &broker);
    eventually("the large event is applied", || async {
        Ok(applied(&pool).await?.0 >= 1)
    })
    .await?;
    relay.stop().await?;
    consumer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_applied_once() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let recorder = Recorder::default();
    let running = consumer(&pool, &broker.url, &topology, recorder.clone());

    let twice = followed(1).encode_to_vec();
    let sentinel = followed(2);
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[
            twice.clone(),
            twice.clone(),
            twice,
            sentinel.encode_to_vec(),
        ],
    )
    .await?;
    eventually("all four deliveries are processed", || async {
        let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
            .fetch_one(&pool)
            .await?;
        Ok(processed == 2 && recorder.calls(&sentinel.event_id) == 1)
    })
    .await?;
    // Let any straggling duplicate finish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(applied(&pool).await?, (2, 2));
    running.stop().await?;
    Ok(())
}

/// A redelivery of an applied event is a duplicate, even when preparing it
/// fails: it is acked, not requeued while the dependency is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_whose_preparation_fails_is_acked() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let event = followed(1);
    let recorder = Recorder {
        prepare_down_after_first: Some(event.event_id.clone()),
        ..Recorder::default()
    };
    let running = consumer(&pool, &broker.url, &topology, recorder.clone());
    let payload = event.encode_to_vec();
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        std::slice::from_ref(&payload),
    )
    .await?;
    eventually("the event is applied", || async {
        Ok(applied(&pool).await? == (1, 1))
    })
    .await?;

    publish_raw(&broker.url, &broker.exchange(), "user.followed", &[payload]).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let preparations = recorder.prepared.lock().unwrap()[&event.event_id];
    assert_eq!(preparations, 2, "prepared once per delivery, not requeued");
    assert_eq!(applied(&pool).await?, (1, 1));
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_each_event_exactly_once() -> anyhow::Result<()> {
    const N: usize = 200;
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("count", &["#"]);
    declare(&broker.url, &topology).await?;

    // Count raw deliveries, not applications: consumer-side deduplication
    // would hide a double publish.
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let conn = broker::connect(&broker.url, "test-counter").await?;
    let channel = conn.create_channel().await?;
    let mut deliveries = channel
        .basic_consume(
            topology.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let counter = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string())
                    .unwrap_or_default();
                *seen.lock().unwrap().entry(id).or_default() += 1;
            }
        }
    });

    let mut ids = Vec::with_capacity(N);
    for chunk in 0..N / 10 {
        let mut tx = pool.begin().await?;
        for i in 0..10 {
            let envelope = followed(chunk * 10 + i);
            enqueue(&mut tx, &envelope).await?;
            ids.push(envelope.event_id);
        }
        tx.commit().await?;
    }
    let make = || {
        let relay = OutboxRelay::new(pool.clone(), &broker.url, broker.exchange())
            .batch_size(7)
            .poll_interval(Duration::from_millis(10));
        Running::spawn(|shutdown| relay.run(shutdown))
    };
    let (first, second) = (make(), make());
    eventually("every event is seen", || async {
        let seen_all = seen.lock().unwrap().len() == N;
        Ok(seen_all && backlog(&pool).await? == 0)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The gauge is refreshed once a second, not after every batch.
    let db = pool
        .connect_options()
        .get_database()
        .unwrap_or_default()
        .to_owned();
    eventually("the backlog gauge reads empty", || async {
        Ok(quill_platform::metrics::get()
            .outbox_backlog
            .with_label_values(&[db.as_str()])
            .get()
            == 0)
    })
    .await?;
    first.stop().await?;
    second.stop().await?;

    let seen = seen.lock().unwrap().clone();
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "event {id} published once");
    }
    assert_eq!(seen.len(), N);
    let metrics = quill_platform::metrics::get();
    assert_eq!(
        metrics
            .events_published
            .with_label_values(&["user.followed"])
            .get(),
        N as u64,
        "the relays count each confirmed publish once"
    );
    assert_eq!(
        metrics
            .outbox_backlog
            .with_label_values(&[pool.connect_options().get_database().unwrap_or_default()])
            .get(),
        0
    );
    counter.abort();
    conn.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_applied_in_shared_transactions_each_event_once() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let events: Vec<Envelope> = (0..200).map(followed).collect();
    let mut payloads: Vec<Vec<u8>> = events.iter().map(Message::encode_to_vec).collect();
    // A producer's retry: the same event twice, side by side in one batch.
    payloads.insert(1, events[0].encode_to_vec());
    publish_raw(&broker.url, &broker.exchange(), "user.followed", &payloads).await?;

    let running = consumer(&pool, &broker.url, &topology, Recorder::default());
    eventually("every event is applied", || async {
        Ok(applied(&pool).await? == (200, 200))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(applied(&pool).await?, (200, 200), "none applied twice");
    // Each row records the transaction that inserted it: one per commit.
    let commits: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM processed_events")
            .fetch_one(&pool)
            .await?;
    assert!(commits <= 100, "200 events took {commits} commits");
    running.stop().await?;
    Ok(())
}

/// What handlers defer is written by one `finish` per transaction, in that
/// transaction, and only for the events that applied: a failing event's
/// deferred writes go with its savepoint. (Each is written in the same
/// transaction as its event's record, and not inside a savepoint left
/// open by a failed event, which `xmin` would tell.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_writes_are_made_once_per_transaction_for_the_events_applied() -> anyhow::Result<()>
{
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let events: Vec<Envelope> = (0..60).map(followed).collect();
    let poison = events[30].event_id.clone();
    let payloads: Vec<Vec<u8>> = events.iter().map(Message::encode_to_vec).collect();
    publish_raw(&broker.url, &broker.exchange(), "user.followed", &payloads).await?;

    let recorder = Recorder {
        poison: Some(poison.clone()),
        ..Recorder::default()
    };
    let running = consumer(&pool, &broker.url, &topology, recorder);
    eventually("the other events apply", || async {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM finished")
                .fetch_one(&pool)
                .await?
                >= 59,
        )
    })
    .await?;
    let (rows, events, poisoned, elsewhere, transactions): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT count(*), count(DISTINCT f.event_id),
                    count(*) FILTER (WHERE f.event_id = $1::uuid),
                    count(*) FILTER (WHERE p.xmin IS DISTINCT FROM f.xmin),
                    count(DISTINCT f.xmin::text)
             FROM finished f LEFT JOIN processed_events p ON p.event_id = f.event_id",
        )
        .bind(&poison)
        .fetch_one(&pool)
        .await?;
    assert_eq!((rows, events, poisoned), (59, 59, 0));
    assert_eq!(elsewhere, 0, "each written with its event's record");
    assert!(transactions < 59, "59 events, {transactions} finishes");
    running.stop().await.ok();
    Ok(())
}

/// Handlers that write nothing until `finish` share transactions without
/// a savepoint each. One failing still leaves only its own event out; one
/// swallowing a failed statement (an aborted transaction, with no
/// savepoint to contain it) fails its batch, whose other events then apply
/// alone, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_without_writes_of_their_own_share_transactions_without_savepoints()
-> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let events: Vec<Envelope> = (0..60).map(followed).collect();
    let poison = events[20].event_id.clone();
    let swallowing = events[40].event_id.clone();
    let payloads: Vec<Vec<u8>> = events.iter().map(Message::encode_to_vec).collect();
    publish_raw(&broker.url, &broker.exchange(), "user.followed", &payloads).await?;

    let recorder = Recorder {
        poison: Some(poison.clone()),
        swallow_on: Some(swallowing.clone()),
        read_only: true,
        ..Recorder::default()
    };
    let running = consumer(&pool, &broker.url, &topology, recorder);
    let finished = || async {
        sqlx::query_as::<_, (i64, i64, i64, i64)>(
            "SELECT count(*), count(DISTINCT event_id),
                    count(*) FILTER (WHERE event_id IN ($1::uuid, $2::uuid)),
                    count(DISTINCT xmin::text)
             FROM finished",
        )
        .bind(&poison)
        .bind(&swallowing)
        .fetch_one(&pool)
        .await
    };
    eventually("the other events apply", || async {
        Ok(finished().await?.0 >= 58)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rows, distinct, failed, transactions) = finished().await?;
    assert_eq!((rows, distinct, failed), (58, 58, 0));
    assert!(transactions < 58, "58 events, {transactions} transactions");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM processed_events WHERE event_id IN ($1::uuid, $2::uuid)",
    )
    .bind(&poison)
    .bind(&swallowing)
    .fetch_one(&pool)
    .await?;
    assert_eq!(recorded, 0, "a failed event is not recorded as processed");
    running.stop().await.ok();
    Ok(())
}

/// A handler's preparation (a call to another service, say) runs before
/// and outside the transactions: preparations that never end, as many as
/// the consumer runs transactions at once, hold up none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_preparation_holds_up_no_transaction() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let stalled = [followed(0), followed(1)];
    let started = Arc::new(Notify::new());
    let recorder = Recorder {
        stall_prepare: Some((
            stalled.iter().map(|e| e.event_id.clone()).collect(),
            started.clone(),
        )),
        ..Recorder::default()
    };
    let others: Vec<Envelope> = (2..=21).map(followed).collect();
    let payloads: Vec<Vec<u8>> = stalled
        .iter()
        .chain(&others)
        .map(Message::encode_to_vec)
        .collect();
    others_apply_while_one_waits(&pool, &broker, &topology, recorder, &payloads, &started).await
}

/// Publishes `payloads` (20 of which apply), starts the consumer, and
/// waits for those 20 once `started` says one event is stuck.
async fn others_apply_while_one_waits(
    pool: &PgPool,
    broker: &TestBroker,
    topology: &Topology,
    recorder: Recorder,
    payloads: &[Vec<u8>],
    started: &Notify,
) -> anyhow::Result<()> {
    publish_raw(&broker.url, &broker.exchange(), "user.followed", payloads).await?;
    let running = consumer(pool, &broker.url, topology, recorder);
    started.notified().await;
    eventually("the others apply while one waits", || async {
        Ok(applied(pool).await? == (20, 20))
    })
    .await?;
    running.stop().await.ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_declared_slow_runs_alone_and_holds_up_no_batch() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let slow = followed(0);
    let started = Arc::new(Notify::new());
    let recorder = Recorder {
        hang_on: Some((slow.event_id.clone(), started.clone())),
        ..Recorder::default()
    };
    let others: Vec<Envelope> = (1..=20).map(followed).collect();
    // In the middle of a backlog, where a batch would take it with others.
    let mut payloads: Vec<Vec<u8>> = others.iter().map(Message::encode_to_vec).collect();
    payloads.insert(10, slow.encode_to_vec());
    others_apply_while_one_waits(&pool, &broker, &topology, recorder, &payloads, &started).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_parked_after_max_attempts_while_others_flow() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let poison = followed(0);
    let recorder = Recorder {
        poison: Some(poison.event_id.clone()),
        ..Recorder::default()
    };
    let running = consumer(&pool, &broker.url, &topology, recorder.clone());

    let good: Vec<Envelope> = (1..=5).map(followed).collect();
    let mut payloads = vec![poison.encode_to_vec()];
    payloads.extend(good.iter().map(Message::encode_to_vec));
    publish_raw(&broker.url, &broker.exchange(), "user.followed", &payloads).await?;

    eventually("the good events are applied", || async {
        Ok(applied(&pool).await? == (5, 5))
    })
    .await?;
    let parked = get_parked(&broker.url, &topology).await?;
    assert_eq!(
        Envelope::decode(&parked.data[..])?.event_id,
        poison.event_id
    );
    assert_eq!(attempts(&parked.properties), topology.max_attempts);
    let kept_key = parked
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-routing-key").cloned());
    assert!(
        matches!(&kept_key, Some(AMQPValue::LongString(key)) if key.to_string() == "user.followed"),
        "the parked message keeps its routing key: {kept_key:?}"
    );
    assert_eq!(recorder.calls(&poison.event_id), topology.max_attempts);
    let processed: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)")
            .bind(Uuid::parse_str(&poison.event_id)?)
            .fetch_one(&pool)
            .await?;
    assert!(!processed, "a failed run leaves no trace");

    let consumed = |outcome: &str| {
        quill_platform::metrics::get()
            .events_consumed
            .with_label_values(&[topology.queue.as_str(), "user.followed", outcome])
            .get()
    };
    assert_eq!(consumed("ok"), 5);
    assert_eq!(consumed("retried"), u64::from(topology.max_attempts - 1));
    assert_eq!(consumed("dead_lettered"), 1);
    let scrape = quill_platform::metrics::get().render();
    assert!(
        scrape
            .lines()
            .any(|line| line.starts_with("events_consumed_total{")
                && line.contains(r#"outcome="dead_lettered""#)
                && line.contains(&topology.queue)
                && line.ends_with(" 1")),
        "{scrape}"
    );
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_goes_straight_to_the_dlq() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let running = consumer(&pool, &broker.url, &topology, Recorder::default());
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[b"\xff\xff not protobuf".to_vec()],
    )
    .await?;

    let parked = get_parked(&broker.url, &topology).await?;
    assert_eq!(attempts(&parked.properties), 1);
    let error = parked
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-last-error").cloned());
    assert!(matches!(error, Some(AMQPValue::LongString(_))));
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_events_and_loses_none() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.*"]);
    declare(&broker.url, &topology).await?;
    let upstream: SocketAddr = "127.0.0.1:5672".parse()?;
    let proxy = TcpProxy::start(upstream).await;
    let via_proxy = broker.url_via(proxy.addr());
    let relay = relay(&pool, &via_proxy, &broker);
    let consumer = consumer(&pool, &via_proxy, &topology, Recorder::default());

    for n in 0..10 {
        enqueue_with_item(&pool, &followed(n)).await?;
    }
    eventually("the first events arrive", || async {
        Ok(applied(&pool).await?.1 == 10)
    })
    .await?;

    proxy.cut();
    for n in 10..20 {
        enqueue_with_item(&pool, &followed(n)).await?;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        backlog(&pool).await?,
        10,
        "nothing is published during the cut"
    );
    assert_eq!(applied(&pool).await?, (10, 10));

    proxy.restore();
    eventually("every event arrives after the restore", || async {
        Ok(applied(&pool).await?.1 == 20)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied(&pool).await?, (20, 20), "none applied twice");
    assert_eq!(backlog(&pool).await?, 0);
    relay.stop().await?;
    consumer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_consumer_dies_mid_handling_is_redelivered_and_applied_once()
-> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let event = followed(1);
    let started = Arc::new(Notify::new());
    let hanging = Recorder {
        hang_on: Some((event.event_id.clone(), started.clone())),
        ..Recorder::default()
    };
    let doomed = consumer(&pool, &broker.url, &topology, hanging);
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[event.encode_to_vec()],
    )
    .await?;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .context("the handler never started")?;

    // The process dies: its transaction and its connection go away unacked.
    doomed.task.abort();
    let _ = doomed.task.await;

    let recorder = Recorder::default();
    let survivor = consumer(&pool, &broker.url, &topology, recorder.clone());
    eventually("the event is applied by the new consumer", || async {
        Ok(applied(&pool).await?.0 == 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied(&pool).await?, (1, 1));
    assert_eq!(recorder.calls(&event.event_id), 1);
    survivor.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_parked_and_the_consumer_keeps_going() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let bug = followed(0);
    let recorder = Recorder {
        panic_on: Some(bug.event_id.clone()),
        ..Recorder::default()
    };
    let running = consumer(&pool, &broker.url, &topology, recorder.clone());
    let after = followed(1);
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[bug.encode_to_vec(), after.encode_to_vec()],
    )
    .await?;

    let parked = get_parked(&broker.url, &topology).await?;
    assert_eq!(Envelope::decode(&parked.data[..])?.event_id, bug.event_id);
    assert_eq!(attempts(&parked.properties), topology.max_attempts);
    eventually("the next event is applied", || async {
        Ok(applied(&pool).await? == (1, 1))
    })
    .await?;
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_before_its_consumer_first_starts_is_delivered_when_it_does()
-> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let config = EventsConfig {
        exchange: broker.exchange(),
        ..EventsConfig::default()
    };
    let topologies = catalog::all(&config, &broker.prefix);
    for topology in &topologies {
        broker.track(topology.clone());
    }
    // Nothing is declared yet but by the relay itself, from the catalog.
    let relay = OutboxRelay::new(pool.clone(), &broker.url, broker.exchange())
        .poll_interval(Duration::from_millis(20))
        .declare_queues(topologies);
    let relay = Running::spawn(|shutdown| relay.run(shutdown));
    let early = new_envelope(
        "test",
        Payload::UserRegistered(UserRegistered {
            user: Some(UserSnapshot {
                id: Uuid::new_v4().to_string(),
                username: "early".into(),
                ..UserSnapshot::default()
            }),
        }),
    );
    enqueue_with_item(&pool, &early).await?;
    eventually("the relay has published the event", || async {
        Ok(backlog(&pool).await? == 0)
    })
    .await?;
    relay.stop().await?;

    let recorder = Recorder::default();
    let content = consumer(
        &pool,
        &broker.url,
        &catalog::content(&config, &broker.prefix),
        recorder.clone(),
    );
    eventually("the consumer applies the early event", || async {
        Ok(recorder.calls(&early.event_id) == 1)
    })
    .await?;
    content.stop().await?;

    // Every catalog queue bound to the key holds its copy, consumer or not.
    let conn = broker::connect(&broker.url, "test-peek").await?;
    let channel = conn.create_channel().await?;
    let waiting = channel
        .basic_get(
            catalog::notification(&config, &broker.prefix)
                .queue
                .as_str()
                .into(),
            BasicGetOptions { no_ack: true },
        )
        .await?
        .context("notification's queue holds the event")?;
    assert_eq!(
        Envelope::decode(&waiting.delivery.data[..])?.event_id,
        early.event_id
    );
    conn.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_dependency_requeues_the_event_without_spending_its_attempts()
-> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    // More unavailable runs than attempts: counted, they would park it.
    let down_runs = topology.max_attempts + 3;
    let event = followed(1);
    let other = followed(2);
    let recorder = Recorder {
        unavailable_for: Some((event.event_id.clone(), down_runs)),
        ..Recorder::default()
    };
    let running = consumer(&pool, &broker.url, &topology, recorder.clone());
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[event.encode_to_vec(), other.encode_to_vec()],
    )
    .await?;

    eventually("both events are applied", || async {
        Ok(applied(&pool).await? == (2, 2))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied(&pool).await?, (2, 2), "applied once, none twice");
    assert_eq!(recorder.calls(&event.event_id), down_runs + 1);
    assert_eq!(recorder.calls(&other.event_id), 1);
    assert_eq!(consumed_total(&topology, "requeued"), u64::from(down_runs));
    // Only a republish writes x-attempts: none happened, nothing was parked.
    assert_eq!(consumed_total(&topology, "retried"), 0);
    assert_eq!(consumed_total(&topology, "dead_lettered"), 0);
    assert_eq!(consumed_total(&topology, "ok"), 2);
    for queue in topology.queues() {
        assert_eq!(broker.ready_messages(&queue).await, 0, "{queue} is empty");
    }
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_paused_by_an_outage_stops_at_once_and_leaves_the_event_queued_intact()
-> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let event = followed(1);
    let recorder = Recorder {
        unavailable_for: Some((event.event_id.clone(), u32::MAX)),
        ..Recorder::default()
    };
    let long_pause = Duration::from_secs(60);
    let consumer = Consumer::new(
        pool.clone(),
        &broker.url,
        topology.clone(),
        recorder.clone(),
    )
    .unavailable_backoff(long_pause, long_pause);
    let running = Running::spawn(|shutdown| consumer.run(shutdown));
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[event.encode_to_vec()],
    )
    .await?;
    eventually("the handler has run", || async {
        Ok(recorder.calls(&event.event_id) == 1)
    })
    .await?;

    let stopping = tokio::time::Instant::now();
    running.stop().await?;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "shutdown cuts the pause short, took {:?}",
        stopping.elapsed()
    );
    assert_eq!(consumed_total(&topology, "requeued"), 1);
    let conn = broker::connect(&broker.url, "test-peek").await?;
    let channel = conn.create_channel().await?;
    let back = channel
        .basic_get(
            topology.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await?
        .context("the event is back in its queue")?;
    assert_eq!(
        Envelope::decode(&back.delivery.data[..])?.event_id,
        event.event_id
    );
    assert_eq!(attempts(&back.delivery.properties), 0, "no attempt spent");
    // Back as a new message, not a nacked one: the outage spent nothing of
    // the queue's delivery limit. The copy may count the one return of the
    // stopping consumer's prefetch; a nack would have added its own.
    let delivery_count = back
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
    assert!(
        matches!(
            delivery_count,
            None | Some(AMQPValue::LongLongInt(0 | 1) | AMQPValue::LongInt(0 | 1))
        ),
        "{:?}",
        back.delivery.properties
    );
    conn.close(200, "done".into()).await?;
    assert_eq!(
        broker.ready_messages(&topology.dead_letter_queue()).await,
        0
    );
    assert_eq!(applied(&pool).await?, (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_requeues_the_event_until_it_ends_and_parks_nothing() -> anyhow::Result<()>
{
    let (db, _pool) = database().await?;
    let name = db
        .url
        .rsplit('/')
        .next()
        .context("database name")?
        .to_owned();
    // The consumer's own pool, as a service has.
    let consumer_pool = db.connect(2).await;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let event = followed(1);
    let (started, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let recorder = Recorder {
        hold_once: Some((event.event_id.clone(), started.clone(), resume.clone())),
        ..Recorder::default()
    };
    let running = consumer(&consumer_pool, &broker.url, &topology, recorder.clone());
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[event.encode_to_vec()],
    )
    .await?;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .context("the handler never started")?;

    // The database goes away under the running handler, and stays away:
    // its write fails, and so does every later `begin`.
    allow_connections(&name, false).await?;
    resume.notify_one();
    eventually(
        "the event is requeued more times than it has attempts",
        || async { Ok(consumed_total(&topology, "requeued") > u64::from(topology.max_attempts)) },
    )
    .await?;
    assert_eq!(
        broker.ready_messages(&topology.dead_letter_queue()).await,
        0
    );
    assert_eq!(consumed_total(&topology, "retried"), 0);
    assert_eq!(
        recorder.calls(&event.event_id),
        1,
        "no handler run without a database"
    );

    allow_connections(&name, true).await?;
    // The outage ended this test's own connection too, a moment after its
    // last use, when a pool hands a connection out without a ping.
    let pool = db.connect(1).await;
    eventually("the event is applied after the outage", || async {
        Ok(applied(&pool).await? == (1, 1))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied(&pool).await?, (1, 1), "applied once");
    assert_eq!(recorder.calls(&event.event_id), 2);
    assert_eq!(consumed_total(&topology, "ok"), 1);
    assert_eq!(consumed_total(&topology, "retried"), 0);
    assert_eq!(consumed_total(&topology, "dead_lettered"), 0);
    assert_eq!(
        broker.ready_messages(&topology.dead_letter_queue()).await,
        0
    );
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_is_woken_by_the_commit_not_its_poll() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.*"]);
    declare(&broker.url, &topology).await?;
    // A poll so slow that only the commit's wakeup can explain a publish
    // within the test's deadline.
    let relay = OutboxRelay::new(pool.clone(), &broker.url, broker.exchange())
        .poll_interval(Duration::from_secs(3600));
    let relay = Running::spawn(|shutdown| relay.run(shutdown));
    // Let the relay go idle (its first empty batch).
    tokio::time::sleep(Duration::from_millis(500)).await;

    for n in 0..3 {
        enqueue_with_item(&pool, &followed(n)).await?;
        eventually("the committed event is published", || async {
            Ok(backlog(&pool).await? == 0)
        })
        .await?;
    }
    relay.stop().await?;
    Ok(())
}

/// A published hook whose work, on a task of its own as content's cache
/// bump runs, waits until the test lets it go.
struct HeldHook {
    gate: Arc<Semaphore>,
    announced: Arc<AtomicUsize>,
}

#[async_trait]
impl Published for HeldHook {
    async fn published(&self, events: &[Envelope]) {
        let (gate, announced, count) = (self.gate.clone(), self.announced.clone(), events.len());
        let work = tokio::spawn(async move {
            let _permit = gate.acquire().await;
            announced.fetch_add(count, Ordering::SeqCst);
        });
        let _ = work.await;
    }
}

/// The hook (content's cache bump, a Redis round trip that waits up to 2 s
/// when Redis does not answer) holds the relay 50 ms at most: events
/// committed while it hangs still go out, and the work of every call
/// completes once it is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_published_hook_holds_each_batch_50_ms_at_most() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.*"]);
    declare(&broker.url, &topology).await?;
    let gate = Arc::new(Semaphore::new(0));
    let announced = Arc::new(AtomicUsize::new(0));
    let relay = OutboxRelay::new(pool.clone(), &broker.url, broker.exchange())
        .poll_interval(Duration::from_millis(20))
        .on_published(HeldHook {
            gate: gate.clone(),
            announced: announced.clone(),
        });
    let relay = Running::spawn(|shutdown| relay.run(shutdown));

    // One batch at a time: each event is out before the next is written.
    for n in 0..3 {
        enqueue_with_item(&pool, &followed(n)).await?;
        eventually("the event is published while the hooks hang", || async {
            Ok(backlog(&pool).await? == 0)
        })
        .await?;
    }
    assert_eq!(announced.load(Ordering::SeqCst), 0, "the hooks still hang");

    gate.add_permits(3);
    eventually("every event reaches the hook", || async {
        Ok(announced.load(Ordering::SeqCst) == 3)
    })
    .await?;
    relay.stop().await?;
    Ok(())
}

/// A queue as an older Quill named it (classic, `<prefix>.<name>`), and
/// the topology of today's build that retires it (`<prefix>.<name>.v2`).
fn upgraded(broker: &TestBroker, name: &str) -> (Topology, Topology) {
    let old = broker.topology(name, &["user.followed"]);
    let topology = Topology {
        queue: format!("{}.v2", old.queue),
        legacy_queue: Some(old.queue.clone()),
        ..old.clone()
    };
    broker.track(topology.clone());
    (old, topology)
}

/// A broker an older Quill used holds a classic queue for the service (and
/// its retry queues), with events in them. While an old replica still
/// consumes it nothing moves; then the consumer retires it: every event is
/// applied once from the new quorum queue, the old queues are gone, and new
/// events no longer reach them.
#[tokio::test]
async fn an_older_brokers_classic_queues_are_retired_losing_nothing() -> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let (old, topology) = upgraded(&broker, "svc");

    let conn = broker::connect(&broker.url, "test-older-quill").await?;
    let channel = conn.create_channel().await?;
    legacy::declare_as_an_older_quill(&channel, &topology).await?;
    // An old replica, still running, holds the old queue.
    let old_replica = channel
        .basic_consume(
            old.queue.as_str().into(),
            "old-replica".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let routed: Vec<Envelope> = (0..3).map(followed).collect();
    let bytes = |events: &[Envelope]| {
        events
            .iter()
            .map(Message::encode_to_vec)
            .collect::<Vec<_>>()
    };
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &bytes(&routed),
    )
    .await?;
    let retried = followed(3);
    let retry = old.retry_queue(1);
    publish_raw(
        &broker.url,
        "",
        &retry,
        &bytes(std::slice::from_ref(&retried)),
    )
    .await?;
    declare(&broker.url, &topology).await?;
    assert_eq!(
        legacy::retire(&broker.url, &topology).await?,
        legacy::Progress::OldReplicasRun
    );
    // Stopping, it hands back what it held.
    drop(old_replica);
    conn.close(200, "old replica stopped".into()).await?;

    let running = consumer(&pool, &broker.url, &topology, Recorder::default());
    eventually("the old queues' events are applied", || async {
        Ok(applied(&pool).await? == (4, 4))
    })
    .await?;
    eventually("the old queues are gone", || async {
        let conn = broker::connect(&broker.url, "test-peek").await?;
        let mut gone = true;
        for queue in [&old.queue, &retry] {
            let probe = conn.create_channel().await?;
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            gone &= probe
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .is_err();
        }
        conn.close(200, "done".into()).await?;
        Ok(gone)
    })
    .await?;
    // The new queue is a quorum queue: declaring it classic is refused.
    let conn = broker::connect(&broker.url, "test-peek").await?;
    let classic = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    assert!(
        classic
            .queue_declare(topology.queue.as_str().into(), durable, args)
            .await
            .is_err(),
        "{} is not a quorum queue",
        topology.queue
    );
    let _ = conn.close(200, "done".into()).await;

    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &bytes(&[followed(4)]),
    )
    .await?;
    eventually("a new event is applied", || async {
        Ok(applied(&pool).await? == (5, 5))
    })
    .await?;
    running.stop().await
}

/// A message the consumer never settles (it crashes on it, or its
/// connection drops) comes back each time; past the delivery limit the
/// queue parks it instead of feeding it to every replica forever.
#[tokio::test]
async fn a_message_redelivered_past_the_delivery_limit_is_parked() -> anyhow::Result<()> {
    let broker = TestBroker::new();
    let topology = broker.topology("limit", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    let event = followed(0);
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[event.encode_to_vec()],
    )
    .await?;

    let conn = broker::connect(&broker.url, "test-crashing-consumer").await?;
    let channel = conn.create_channel().await?;
    let mut deliveries = 0;
    while let Some(message) = channel
        .basic_get(topology.queue.as_str().into(), BasicGetOptions::default())
        .await?
    {
        deliveries += 1;
        let requeue = lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        message.delivery.acker.nack(requeue).await?;
        anyhow::ensure!(deliveries <= 100, "never parked");
    }
    conn.close(200, "done".into()).await?;
    // The broker counts a return past the limit (3.10 and later: limit + 1).
    assert!(
        (broker::DELIVERY_LIMIT..=broker::DELIVERY_LIMIT + 1).contains(&deliveries),
        "{deliveries} deliveries"
    );

    let parked = get_parked(&broker.url, &topology).await?;
    assert_eq!(Envelope::decode(&parked.data[..])?.event_id, event.event_id);
    Ok(())
}

/// An older Quill that ran another retry schedule declared its retry
/// queues with other TTLs: declaring them as this one would is refused, and
/// the retirement still moves everything and deletes them.
#[tokio::test]
async fn classic_queues_of_another_retry_schedule_are_retired_too() -> anyhow::Result<()> {
    let broker = TestBroker::new();
    let (old, topology) = upgraded(&broker, "other");
    let staged = Topology {
        retry_delays: vec![Duration::from_secs(30)],
        ..topology.clone()
    };
    let conn = broker::connect(&broker.url, "test-older-quill").await?;
    let channel = conn.create_channel().await?;
    legacy::declare_as_an_older_quill(&channel, &staged).await?;
    conn.close(200, "staged".into()).await?;
    declare(&broker.url, &topology).await?;
    let bytes = |events: Vec<Envelope>| {
        events
            .iter()
            .map(Message::encode_to_vec)
            .collect::<Vec<_>>()
    };
    publish_raw(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &bytes(vec![followed(0), followed(1)]),
    )
    .await?;
    publish_raw(
        &broker.url,
        "",
        &old.retry_queue(1),
        &bytes(vec![followed(2)]),
    )
    .await?;

    assert_eq!(
        legacy::retire(&broker.url, &topology).await?,
        legacy::Progress::Done { moved: 3 }
    );
    // The routed two reached the new queue directly too (it was bound
    // already); the inbox applies each once.
    assert_eq!(broker.ready_messages(&topology.queue).await, 2 + 3);
    assert_eq!(
        legacy::retire(&broker.url, &topology).await?,
        legacy::Progress::Done { moved: 0 },
        "nothing left, and no error on a broker without old queues"
    );
    Ok(())
}

/// Counts the ERROR events lapin logs, from any thread: it closes a dropped
/// channel on a task of its own, so only a process-wide subscriber sees
/// that (nextest runs each test in a process of its own).
fn lapin_errors() -> Arc<AtomicUsize> {
    use tracing_subscriber::{Layer, layer::Context, prelude::*};

    struct Count(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let meta = event.metadata();
            if *meta.level() == tracing::Level::ERROR && meta.target().starts_with("lapin") {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let errors = Arc::new(AtomicUsize::new(0));
    tracing_subscriber::registry()
        .with(Count(errors.clone()))
        .try_init()
        .expect("no other subscriber in this test's process");
    errors
}

/// Retiring old queues, consuming and relaying, then stopping, all as they
/// should: lapin has nothing to say at ERROR. Each closes its channels before
/// their connection; a channel dropped open is closed by lapin in the
/// background, which then meets the connection closing and logs a
/// "connection error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_and_stopping_logs_no_broker_errors() -> anyhow::Result<()> {
    let errors = lapin_errors();
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let (_old, topology) = upgraded(&broker, "quiet");
    declare(&broker.url, &topology).await?;

    assert_eq!(
        legacy::retire(&broker.url, &topology).await?,
        legacy::Progress::Done { moved: 0 }
    );
    let handler = Recorder::default();
    let consuming = consumer(&pool, &broker.url, &topology, handler.clone());
    let relaying = relay(&pool, &broker.url, &broker);
    let event = followed(1);
    enqueue_with_item(&pool, &event).await?;
    eventually("the event is relayed and applied", || async {
        Ok(handler.calls(&event.event_id) == 1)
    })
    .await?;
    relaying.stop().await?;
    consuming.stop().await?;
    // lapin's background closes run after the calls that dropped them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "lapin logged errors for a clean start and stop"
    );
    Ok(())
}
