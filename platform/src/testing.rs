//! Isolation for integration tests against the real PostgreSQL and Redis:
//! each test gets its own database and its own Redis key prefix, both removed
//! when the test ends, so tests run in parallel and leave nothing behind.

use std::{net::SocketAddr, str::FromStr};

use sqlx::{
    Connection, Executor,
    postgres::{PgConnectOptions, PgConnection},
};
use tokio::net::TcpListener;

/// Server URL tests create their databases on.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database that exists for the lifetime of this value.
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    /// Names the database `<label>_test_<random>`; the service creates it.
    pub fn new(label: &str) -> Self {
        let name = format!("{label}_test_{}", uuid::Uuid::new_v4().simple());
        Self {
            url: format!("{}/{name}", postgres_server_url()),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; use a private one.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(async move {
                    let options =
                        PgConnectOptions::from_str(&postgres_server_url())?.database("postgres");
                    let mut conn = PgConnection::connect_with(&options).await?;
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
    }
}

/// A Redis key prefix whose keys are deleted when this value drops.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    pub fn new() -> Self {
        Self {
            url: redis_url(),
            prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl TestRedis {
    /// Deletes every key of this prefix whose name (after the prefix) starts
    /// with `kind`, as a Redis restart without persistence would.
    pub async fn forget(&self, kind: &str) {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}{kind}*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await
                .expect("DEL");
        }
    }
}

/// The service secret of every test system (tests that need another make
/// their own).
pub fn service_secret() -> crate::service_identity::ServiceSecret {
    crate::service_identity::ServiceSecret::new("quill test service secret, never for production")
        .expect("long enough")
}

/// The settings servers of one test need to authenticate with the same auth:
/// its Redis prefix (shared session cache) and the test service secret.
pub fn authn_config(redis: &TestRedis) -> crate::authn::AuthnConfig {
    crate::authn::AuthnConfig {
        redis_url: redis.url.clone(),
        redis_prefix: redis.prefix.clone(),
        service_secret: Some(service_secret()),
    }
}

/// A channel whose calls prove to come from `service` (for tests calling
/// internal RPCs as that service would).
pub fn as_service(
    channel: tonic::transport::Channel,
    service: crate::service_identity::Service,
) -> crate::grpc::ServiceChannel {
    crate::grpc::client(
        channel,
        &crate::service_identity::ServiceCredentials::new(service, &service_secret()),
    )
}

/// What the other servers of a test need from its auth server.
#[derive(Debug, Clone)]
pub struct AuthPeer {
    pub url: String,
    pub authn: crate::authn::AuthnConfig,
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}*", self.prefix));
        let _ = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(url)?.get_connection()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn)?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<()>(&mut conn)?;
            }
            Ok(())
        })
        .join();
    }
}

/// A listener on an ephemeral loopback port.
pub async fn ephemeral_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// Broker URL tests connect to.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| crate::events::config::DEFAULT_AMQP_URL.into())
}

/// Isolation on the shared RabbitMQ vhost: every exchange and queue of a test
/// is named under a unique prefix and deleted when this value drops.
pub struct TestBroker {
    pub url: String,
    pub prefix: String,
    topologies: std::sync::Mutex<Vec<crate::events::Topology>>,
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
    pub fn topology(&self, name: &str, bindings: &[&str]) -> crate::events::Topology {
        let topology = crate::events::Topology {
            exchange: self.exchange(),
            queue: format!("{}.{name}", self.prefix),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            max_attempts: 3,
            retry_delays: vec![
                std::time::Duration::from_millis(50),
                std::time::Duration::from_millis(100),
            ],
        };
        self.track(topology.clone());
        topology
    }

    /// Has `topology`'s queues deleted on drop too.
    pub fn track(&self, topology: crate::events::Topology) {
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
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(async move {
                    let conn = crate::events::broker::connect(&url, "test-cleanup").await?;
                    let channel = conn.create_channel().await?;
                    for queue in queues {
                        channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await?;
                    }
                    for exchange in exchanges {
                        channel
                            .exchange_delete(
                                exchange.as_str().into(),
                                ExchangeDeleteOptions::default(),
                            )
                            .await?;
                    }
                    let _ = conn.close(200, "test done".into()).await;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
    }
}

/// A TCP proxy in front of a real server, for outage tests: [`TcpProxy::cut`]
/// drops every live connection and refuses new ones until
/// [`TcpProxy::restore`]. Stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    // Bumped on every cut; live pipes watch it and close. Dropping the
    // sender (with the proxy) closes them too.
    cuts: tokio::sync::watch::Sender<u64>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let (listener, addr) = ephemeral_listener().await;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let accept_loop = tokio::spawn({
            let cut = cut.clone();
            let cuts = cuts.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        // Refused: close at once, so the client sees the outage.
                        drop(inbound);
                        continue;
                    }
                    let mut cut_signal = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut_signal.changed() => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            cut,
            cuts,
            accept_loop,
        }
    }

    /// The address clients connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops live connections and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.cut();
    }
}

/// A producer outside the services, for tests that feed a consumer what no
/// relay would (a poison message) and look at where it ended up.
impl TestBroker {
    /// Publishes `body` as is to this test's exchange under `routing_key`,
    /// persistent and confirmed, as the outbox relay publishes.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        use lapin::{BasicProperties, options::BasicPublishOptions};
        let connection = crate::events::broker::connect(&self.url, "test-publisher")
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
        let connection = crate::events::broker::connect(&self.url, "test-inspect")
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

/// One of our gRPC servers running in-process on an ephemeral port, for
/// integration tests: started by [`TestServer::spawn`], ready (health
/// SERVING) when that returns, stopped by [`TestServer::stop`] or on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// A lazily connected channel to it.
    pub channel: tonic::transport::Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The shutdown signal [`TestServer::spawn`] hands the server.
pub type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl TestServer {
    /// Runs `run(listener, stop)` (a service's `server::run`) on a fresh
    /// listener and waits until its health service answers. Panics if the
    /// server ends during start-up or is not serving within 20 s.
    pub async fn spawn<Run, Fut, E>(name: &str, run: Run) -> Self
    where
        Run: FnOnce(TcpListener, StopSignal) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Debug + Send + 'static,
    {
        let (listener, addr) = ephemeral_listener().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = run(
            listener,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        );
        let label = name.to_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("{label} server failed: {e:?}");
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid url")
            .connect_lazy();
        let mut server = Self {
            addr,
            channel,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_until_serving(name).await;
        server
    }

    async fn wait_until_serving(&mut self, name: &str) {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        for _ in 0..400 {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("{name} server exited during start-up");
            }
            let check = HealthClient::new(self.channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if check.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{name} server did not become healthy within 20 s");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signals shutdown and waits (up to 10 s) for the server to drain.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return;
        };
        // On a multi-threaded runtime the server's consumers keep running
        // on other workers: wait for the drain, or a consumer that sees its
        // queue deleted by the test's broker clean-up reconnects and
        // declares it again, leaving it behind. A current-thread runtime
        // runs nothing else while this drop runs, and ends right after.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(|| {
                    runtime.block_on(async {
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
                    });
                });
            }
            _ => task.abort(),
        }
    }
}
