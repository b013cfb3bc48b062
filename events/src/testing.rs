//! Isolation for integration tests against the real RabbitMQ: each test's
//! exchanges and queues live under a prefix of its own and are deleted when
//! the test ends.

use std::net::SocketAddr;

/// Tables every producing or consuming service needs, as the services'
/// migrations create them (each service owns its schema, so each has its own
/// copy in its migration history); tests of the backbone alone execute this.
///
/// `outbox.payload` is the prost-encoded `Envelope`; the partial index keeps
/// the relay's "oldest unsent rows" scan cheap however many sent rows remain.
/// `processed_events` is the consumer's inbox: one row per applied event.
pub const OUTBOX_AND_INBOX_SQL: &str = r#"
CREATE TABLE IF NOT EXISTS outbox (
    id           uuid PRIMARY KEY,
    routing_key  text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unpublished_idx
    ON outbox (created_at) WHERE published_at IS NULL;
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     uuid PRIMARY KEY,
    consumer     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
"#;

/// Broker URL tests connect to.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| crate::config::AMQP_URL.default.into())
}

/// Isolation on the shared RabbitMQ vhost: every exchange and queue of a test
/// is named under a unique prefix and deleted when this value drops.
pub struct TestBroker {
    pub url: String,
    pub prefix: String,
    topologies: std::sync::Mutex<Vec<crate::Topology>>,
}

impl TestBroker {
    pub fn new() -> Self {
        Self {
            url: amqp_url(),
            prefix: format!("test.{}", uuid::Uuid::new_v4().simple()),
            topologies: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// This test's topic exchange.
    pub fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// A topology for queue `<prefix>.<name>` with short retry delays (50 ms,
    /// 100 ms) and 3 attempts, so retry tests finish fast. Deleted on drop.
    pub fn topology(&self, name: &str, bindings: &[&str]) -> crate::Topology {
        let topology = crate::Topology {
            exchange: self.exchange(),
            queue: format!("{}.{name}", self.prefix),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            max_attempts: 3,
            retry_delays: vec![
                std::time::Duration::from_millis(50),
                std::time::Duration::from_millis(100),
            ],
            legacy_queue: None,
        };
        self.track(topology.clone());
        topology
    }

    /// Points a service's event settings at this broker: its exchange, its
    /// queue prefix, and a 20 ms relay poll so tests do not wait.
    pub fn isolate(&self, events: &mut crate::EventsConfig, queue_prefix: &mut String) {
        events.exchange = self.exchange();
        queue_prefix.clone_from(&self.prefix);
        events.relay_poll_interval = std::time::Duration::from_millis(20);
    }

    /// Has every queue of the catalog deleted on drop (those a service's
    /// relay declares under `queue_prefix`).
    pub fn track_catalog(&self, events: &crate::EventsConfig, queue_prefix: &str) {
        for topology in crate::catalog::all(events, queue_prefix) {
            self.track(topology);
        }
    }

    /// Has `topology`'s queues deleted on drop too.
    pub fn track(&self, topology: crate::Topology) {
        if let Ok(mut topologies) = self.topologies.lock() {
            topologies.push(topology);
        }
    }

    /// The broker URL with its host and port replaced by `addr` (a [`TcpProxy`]).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("amqp://guest:guest@{addr}/%2f")
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let url = self.url.clone();
        let mut exchanges = vec![self.exchange()];
        let mut queues = Vec::new();
        if let Ok(topologies) = self.topologies.lock() {
            for t in topologies.iter() {
                exchanges.push(t.exchange.clone());
                exchanges.push(t.dead_letter_exchange());
                queues.extend(t.queues());
            }
        }
        exchanges.sort();
        exchanges.dedup();
        quill_platform::testing::clean_up(async move {
            let conn = crate::broker::connect(&url, "test-cleanup").await?;
            let channel = conn.create_channel().await?;
            for queue in queues {
                channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
            for exchange in exchanges {
                channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await?;
            }
            let _ = conn.close(200, "test done".into()).await;
            Ok(())
        });
    }
}

/// A producer outside the services, for tests that feed a consumer what no
/// relay would (a poison message) and look at where it ended up.
impl TestBroker {
    /// Publishes `body` as is to this test's exchange under `routing_key`,
    /// persistent and confirmed, as the outbox relay publishes.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        use lapin::{BasicProperties, options::BasicPublishOptions};
        let connection = crate::broker::connect(&self.url, "test-publisher")
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let confirmation = channel
            .basic_publish(
                self.exchange().as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirmation.is_ack(), "publish not confirmed");
        let _ = connection.close(200, "published".into()).await;
    }

    /// Publishes `envelope` under its type, encoded as the relay encodes it.
    pub async fn publish(&self, envelope: &quill_proto::events::v1::Envelope) {
        use prost::Message;
        self.publish_raw(&envelope.r#type, &envelope.encode_to_vec())
            .await;
    }

    /// Messages ready in `queue`, which must exist (a passive declare).
    pub async fn ready_messages(&self, queue: &str) -> u32 {
        use lapin::{options::QueueDeclareOptions, types::FieldTable};
        let connection = crate::broker::connect(&self.url, "test-inspect")
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
        let _ = connection.close(200, "inspected".into()).await;
        declared.message_count()
    }
}
