//! Trace propagation through the event backbone and the metrics it records:
//! an event raised inside a span is consumed inside a span of the same trace,
//! however late the relay publishes it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prost::Message;
use quill_events::{
    Consumer, EventHandler, HandlerError, OutboxRelay, async_trait, broker, enqueue, new_envelope,
    testing::OUTBOX_AND_INBOX_SQL, testing::TestBroker,
};
use quill_platform::{metrics, shutdown::CancellationToken, telemetry, trace_context};
use quill_proto::events::v1::{Envelope, UserFollowed, envelope::Payload};
use quill_server::testing::TestDb;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Instrument;
use uuid::Uuid;

#[derive(Clone, Default)]
struct SeenIn(Arc<Mutex<Vec<(String, String, String)>>>);

#[async_trait]
impl EventHandler for SeenIn {
    type Prepared = ();
    type Deferred = ();
    type Finished = ();

    async fn handle(
        &self,
        _tx: &mut Transaction<'_, Postgres>,
        envelope: &Envelope,
        _: &(),
        _: &mut (),
    ) -> Result<(), HandlerError> {
        let (trace_id, span_id) = trace_context::ids(&tracing::Span::current()).unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push((envelope.event_id.clone(), trace_id, span_id));
        Ok(())
    }
}

/// A database with an outbox and an inbox, and a declared queue for
/// `user.followed` (the exchange drops what no binding routes).
struct Traced {
    _db: TestDb,
    pool: PgPool,
    test_broker: TestBroker,
    topology: quill_events::Topology,
    connection: lapin::Connection,
}

impl Traced {
    async fn start() -> anyhow::Result<Self> {
        let db = TestDb::new("telemetry");
        let pool = db.connect(5).await;
        sqlx::raw_sql(OUTBOX_AND_INBOX_SQL).execute(&pool).await?;
        let test_broker = TestBroker::new();
        let topology = test_broker.topology("traced", &["user.followed"]);
        let connection = broker::connect(&test_broker.url, "telemetry-test").await?;
        topology
            .declare(&connection.create_channel().await?)
            .await?;
        Ok(Self {
            _db: db,
            pool,
            test_broker,
            topology,
            connection,
        })
    }
}

/// Raises an event inside a traced request, its context going into the
/// outbox; returns it and the request's trace id.
async fn raise_in_a_request(pool: &PgPool) -> anyhow::Result<(Envelope, String)> {
    let request = tracing::info_span!("request");
    let (request_trace, _) = trace_context::ids(&request).expect("traced");
    let envelope = async {
        let envelope = new_envelope(
            "test",
            Payload::UserFollowed(UserFollowed {
                follower_id: Uuid::new_v4().to_string(),
                follower_username: "a".into(),
                followee_id: Uuid::new_v4().to_string(),
                followee_username: "b".into(),
            }),
        );
        let mut tx = pool.begin().await?;
        enqueue(&mut tx, &envelope).await?;
        tx.commit().await?;
        anyhow::Ok(envelope)
    }
    .instrument(request)
    .await?;
    assert!(envelope.traceparent.contains(&request_trace));
    Ok((envelope, request_trace))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_continues_the_trace_that_raised_the_event() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("platform-tests");
    let Traced {
        _db,
        pool,
        test_broker,
        topology,
        connection,
    } = Traced::start().await?;

    let (envelope, request_trace) = raise_in_a_request(&pool).await?;

    let seen = SeenIn::default();
    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        OutboxRelay::new(pool.clone(), &test_broker.url, test_broker.exchange())
            .poll_interval(Duration::from_millis(20))
            .run(stop.clone()),
    );
    let consumer = tokio::spawn(
        Consumer::new(
            pool.clone(),
            &test_broker.url,
            topology.clone(),
            seen.clone(),
        )
        .run(stop.clone()),
    );
    let mut handled = None;
    for _ in 0..200 {
        if let Some(entry) = seen.0.lock().unwrap().first().cloned() {
            handled = Some(entry);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (event_id, trace_id, _) = handled.expect("event consumed");
    assert_eq!(event_id, envelope.event_id);
    assert_eq!(
        trace_id, request_trace,
        "the consumer joined the request's trace"
    );
    // The stored envelope kept the original context.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT payload FROM outbox")
        .fetch_one(&pool)
        .await?;
    assert_eq!(
        Envelope::decode(stored.as_slice())?.traceparent,
        envelope.traceparent
    );

    // The relay refreshes the backlog gauge once a second.
    let db = pool
        .connect_options()
        .get_database()
        .unwrap_or_default()
        .to_owned();
    let backlog = metrics::get()
        .outbox_backlog
        .with_label_values(&[db.as_str()]);
    for _ in 0..100 {
        if backlog.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let _ = relay.await;
    let _ = consumer.await;
    let _ = connection.close(200, "done".into()).await;

    let text = metrics::get().render();
    let line = |family: &str, labels: &[&str]| {
        text.lines().any(|l| {
            l.starts_with(family) && labels.iter().all(|x| l.contains(x)) && !l.ends_with(" 0")
        })
    };
    assert!(
        line(
            "events_published_total",
            &[r#"routing_key="user.followed""#]
        ),
        "{text}"
    );
    assert!(
        line(
            "events_consumed_total",
            &[
                &format!(r#"queue="{}""#, topology.queue),
                r#"routing_key="user.followed""#,
                r#"outcome="ok""#,
            ]
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(r#"outbox_backlog{{db="{db}"}} 0"#)),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_together_each_continue_their_own_requests_trace() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("platform-tests");
    let Traced {
        _db,
        pool,
        test_broker,
        topology,
        connection,
    } = Traced::start().await?;
    let (first, first_trace) = raise_in_a_request(&pool).await?;
    let (second, second_trace) = raise_in_a_request(&pool).await?;
    assert_ne!(first_trace, second_trace);

    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        OutboxRelay::new(pool.clone(), &test_broker.url, test_broker.exchange())
            .poll_interval(Duration::from_millis(20))
            .events_per_message(32)
            .run(stop.clone()),
    );
    for _ in 0..200 {
        if quill_events::backlog(&pool).await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        test_broker.ready_messages(&topology.queue).await,
        1,
        "both events went in one message"
    );
    let seen = SeenIn::default();
    let consumer = tokio::spawn(
        Consumer::new(
            pool.clone(),
            &test_broker.url,
            topology.clone(),
            seen.clone(),
        )
        .run(stop.clone()),
    );
    for _ in 0..200 {
        if seen.0.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.cancel();
    let _ = relay.await;
    let _ = consumer.await;
    let _ = connection.close(200, "done".into()).await;

    let mut traces: Vec<(String, String)> = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(event_id, trace_id, _)| (event_id.clone(), trace_id.clone()))
        .collect();
    traces.sort();
    let mut expected = vec![
        (first.event_id, first_trace),
        (second.event_id, second_trace),
    ];
    expected.sort();
    assert_eq!(traces, expected, "each event in its own request's trace");
    Ok(())
}
