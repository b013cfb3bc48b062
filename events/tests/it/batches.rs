//! Events sent together: the relay packs a busy outbox's events of one type
//! into one message, and the consumer applies each as if it had come alone.

use std::{sync::Arc, time::Duration};

use lapin::{BasicProperties, types::AMQPValue};
use prost::Message;
use quill_events::{
    Consumer, OutboxRelay, Topology, consumer::attempts, message, testing::TestBroker,
};
use quill_proto::events::v1::{
    Envelope, EnvelopeBatch, UserRegistered, UserSnapshot, envelope::Payload,
};
use quill_server::testing::TestDb;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::events::{
    Recorder, Running, applied, consumed_total, consumer, database, declare, enqueue_with_item,
    eventually, followed, get_parked, publish_raw_as,
};

fn packing_relay(pool: &PgPool, broker: &TestBroker, per_message: usize) -> Running {
    let relay = OutboxRelay::new(pool.clone(), &broker.url, broker.exchange())
        .poll_interval(Duration::from_millis(20))
        .events_per_message(per_message);
    Running::spawn(|shutdown| relay.run(shutdown))
}

/// A database for a consumer, and its queue for `user.followed`, declared.
async fn follows_queue() -> anyhow::Result<(TestDb, PgPool, TestBroker, Topology)> {
    let (db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.followed"]);
    declare(&broker.url, &topology).await?;
    Ok((db, pool, broker, topology))
}

/// Every queue of `topology` is empty, but those named in `but`.
async fn queues_empty_but(broker: &TestBroker, topology: &Topology, but: &[String]) {
    for queue in topology.queues() {
        if !but.contains(&queue) {
            assert_eq!(broker.ready_messages(&queue).await, 0, "{queue} is empty");
        }
    }
}

fn registered(n: usize) -> Envelope {
    quill_events::new_envelope(
        "test",
        Payload::UserRegistered(UserRegistered {
            user: Some(UserSnapshot {
                id: Uuid::new_v4().to_string(),
                username: format!("user{n}"),
                ..UserSnapshot::default()
            }),
        }),
    )
}

/// Publishes `envelopes` as one batch message, as the relay would.
async fn publish_batch(broker: &TestBroker, envelopes: &[Envelope]) -> anyhow::Result<()> {
    let body = EnvelopeBatch {
        envelopes: envelopes.to_vec(),
    }
    .encode_to_vec();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(message::BATCH_CONTENT_TYPE.into());
    publish_raw_as(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        &[body],
        properties,
    )
    .await
}

fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_type_travel_together_up_to_the_limit_and_each_is_applied_once()
-> anyhow::Result<()> {
    let (_db, pool) = database().await?;
    let broker = TestBroker::new();
    let topology = broker.topology("content", &["user.*"]);
    declare(&broker.url, &topology).await?;
    // Queued before the relay starts, so its first batch holds them all.
    let follows: Vec<Envelope> = (1..=5).map(followed).collect();
    let registration = registered(1);
    for envelope in follows.iter().chain([&registration]) {
        enqueue_with_item(&pool, envelope).await?;
    }

    let relay = packing_relay(&pool, &broker, 2);
    eventually("the outbox is sent", || async {
        Ok(quill_events::backlog(&pool).await? == 0)
    })
    .await?;
    relay.stop().await?;
    // Five follows at two a message, and the registration of its own.
    assert_eq!(broker.ready_messages(&topology.queue).await, 4);

    let recorder = Recorder::default();
    let running = consumer(&pool, &broker.url, &topology, recorder.clone());
    eventually("every event is applied", || async {
        Ok(applied(&pool).await? == (6, 6))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied(&pool).await?, (6, 6), "none twice");
    for envelope in follows.iter().chain([&registration]) {
        assert_eq!(recorder.calls(&envelope.event_id), 1);
    }
    assert_eq!(consumed_total(&topology, "ok"), 5, "counted per event");
    assert_eq!(broker.ready_messages(&topology.queue).await, 0);
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_of_a_batch_retries_and_parks_alone_while_the_rest_apply_once()
-> anyhow::Result<()> {
    let (_db, pool, broker, topology) = follows_queue().await?;
    let poison = followed(0);
    let good: Vec<Envelope> = (1..=3).map(followed).collect();
    let recorder = Recorder {
        poison: Some(poison.event_id.clone()),
        ..Recorder::default()
    };
    let running = consumer(&pool, &broker.url, &topology, recorder.clone());
    let mut batch = vec![good[0].clone(), poison.clone()];
    batch.extend(good[1..].iter().cloned());
    publish_batch(&broker, &batch).await?;

    let parked = get_parked(&broker.url, &topology).await?;
    assert_eq!(
        parked
            .properties
            .content_type()
            .as_ref()
            .map(|t| t.as_str()),
        Some(message::CONTENT_TYPE),
        "the failed event left as a message of its own"
    );
    assert_eq!(Envelope::decode(&parked.data[..])?, poison);
    assert_eq!(
        parked
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some(poison.event_id.as_str())
    );
    assert_eq!(attempts(&parked.properties), topology.max_attempts);
    assert_eq!(
        header(&parked.properties, "x-routing-key").as_deref(),
        Some("user.followed")
    );
    assert_eq!(applied(&pool).await?, (3, 3));
    assert_eq!(recorder.calls(&poison.event_id), topology.max_attempts);
    for envelope in &good {
        assert_eq!(
            recorder.calls(&envelope.event_id),
            1,
            "the batch was not redelivered for its failed event"
        );
    }
    assert_eq!(consumed_total(&topology, "ok"), 3);
    assert_eq!(
        consumed_total(&topology, "retried"),
        u64::from(topology.max_attempts - 1)
    );
    assert_eq!(consumed_total(&topology, "dead_lettered"), 1);
    queues_empty_but(&broker, &topology, &[topology.dead_letter_queue()]).await;
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_batch_meeting_an_outage_is_requeued_alone_without_spending_attempts()
-> anyhow::Result<()> {
    let (_db, pool, broker, topology) = follows_queue().await?;
    // More unavailable runs than attempts: counted, they would park it.
    let down_runs = topology.max_attempts + 2;
    let batch: Vec<Envelope> = (1..=3).map(followed).collect();
    let delayed = batch[1].event_id.clone();
    let recorder = Recorder {
        unavailable_for: Some((delayed.clone(), down_runs)),
        ..Recorder::default()
    };
    let running = consumer(&pool, &broker.url, &topology, recorder.clone());
    publish_batch(&broker, &batch).await?;

    eventually("every event is applied", || async {
        Ok(applied(&pool).await? == (3, 3))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied(&pool).await?, (3, 3), "none twice");
    assert_eq!(recorder.calls(&delayed), down_runs + 1);
    for envelope in batch.iter().filter(|e| e.event_id != delayed) {
        assert_eq!(recorder.calls(&envelope.event_id), 1);
    }
    assert_eq!(consumed_total(&topology, "requeued"), u64::from(down_runs));
    assert_eq!(consumed_total(&topology, "retried"), 0);
    assert_eq!(consumed_total(&topology, "dead_lettered"), 0);
    queues_empty_but(&broker, &topology, &[]).await;
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_does_not_decode_is_parked_whole() -> anyhow::Result<()> {
    let (_db, pool, broker, topology) = follows_queue().await?;
    let running = consumer(&pool, &broker.url, &topology, Recorder::default());
    let garbage = b"\xff\xff not protobuf".to_vec();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(message::BATCH_CONTENT_TYPE.into());
    publish_raw_as(
        &broker.url,
        &broker.exchange(),
        "user.followed",
        std::slice::from_ref(&garbage),
        properties,
    )
    .await?;

    let parked = get_parked(&broker.url, &topology).await?;
    assert_eq!(parked.data, garbage);
    assert_eq!(attempts(&parked.properties), 1);
    assert!(message::is_batch(&parked.properties), "parked as it came");
    assert!(header(&parked.properties, "x-last-error").is_some());
    assert_eq!(applied(&pool).await?, (0, 0));
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_prefetch_is_applied_that_many_at_a_time() -> anyhow::Result<()> {
    let (_db, pool, broker, topology) = follows_queue().await?;
    let batch: Vec<Envelope> = (1..=5).map(followed).collect();
    let started = Arc::new(Notify::new());
    let recorder = Recorder {
        stall_prepare: Some((
            batch.iter().map(|e| e.event_id.clone()).collect(),
            Arc::clone(&started),
        )),
        ..Recorder::default()
    };
    let consumer = Consumer::new(
        pool.clone(),
        &broker.url,
        topology.clone(),
        recorder.clone(),
    )
    .prefetch(2);
    let running = Running::spawn(|shutdown| consumer.run(shutdown));
    publish_batch(&broker, &batch).await?;

    eventually("two preparations start", || async {
        Ok(recorder.prepared.lock().unwrap().len() == 2)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        recorder.prepared.lock().unwrap().len(),
        2,
        "no more events in flight than the prefetch"
    );
    running.stop().await.ok();
    Ok(())
}
