//! A content server running in-process on an ephemeral port, on its own
//! database and event exchange (or a given one, to hear an auth server's
//! events), talking to the auth server at a given URL, for integration tests
//! of this and other crates (the gateway's).

use std::{net::SocketAddr, time::Duration};

use quill_platform::{
    events::catalog,
    testing::{TestBroker, TestDb, ephemeral_listener},
};
use quill_proto::content::v1::content_service_client::ContentServiceClient;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{Config, server};

pub struct TestContent {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub config: Config,
    pub db: TestDb,
    /// Deletes the queues of `config`'s exchange when dropped; the exchange
    /// is this broker's unless `start_with` set another.
    pub broker: TestBroker,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestContent {
    /// Starts against the auth server at `auth_url` (e.g. `TestAuth::url()`).
    pub async fn start(auth_url: &str) -> Self {
        Self::start_with(auth_url, |_| {}).await
    }

    /// Starts with settings adjusted by `tweak`.
    pub async fn start_with(auth_url: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new("quill_content");
        let broker = TestBroker::new();
        let mut config = Config::from_env().expect("content config");
        config.database_url = db.url.clone();
        config.database_max_connections = 5;
        config.auth_url = auth_url.to_owned();
        config.cursor_secret = "test cursor secret, not for production".to_owned();
        config.events.exchange = broker.exchange();
        config.events_queue_prefix = broker.prefix.clone();
        config.events.relay_poll_interval = Duration::from_millis(20);
        tweak(&mut config);
        for topology in catalog::all(&config.events, &config.events_queue_prefix) {
            broker.track(topology);
        }
        let (listener, addr) = ephemeral_listener().await;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config.clone(), listener, async move {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid url")
            .connect_lazy();
        wait_until_serving(&channel, &task).await;
        Self {
            addr,
            channel,
            config,
            db,
            broker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> ContentServiceClient<Channel> {
        ContentServiceClient::new(self.channel.clone())
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestContent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls the health service until it reports SERVING (migrations done, auth
/// keys fetched), failing fast if the server task ended with an error.
async fn wait_until_serving(channel: &Channel, task: &JoinHandle<anyhow::Result<()>>) {
    for _ in 0..400 {
        if task.is_finished() {
            panic!("content server exited during start-up");
        }
        let check = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if check.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("content server did not become healthy within 20 s");
}
