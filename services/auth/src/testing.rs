//! An auth server running in-process on an ephemeral port, on its own
//! database and Redis prefix, for integration tests of this and other crates.

use std::{net::SocketAddr, time::Duration};

use quill_platform::testing::{TestDb, TestRedis, ephemeral_listener};
use quill_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{Config, server};

pub struct TestAuth {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub config: Config,
    pub redis: TestRedis,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestAuth {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with settings adjusted by `tweak` (short token lifetimes...).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new("quill_auth");
        let redis = TestRedis::new();
        let mut config = Config::from_env().expect("auth config");
        config.database_url = db.url.clone();
        config.redis_url = redis.url.clone();
        config.redis_prefix = redis.prefix.clone();
        config.database_max_connections = 5;
        tweak(&mut config);
        let (listener, addr) = ephemeral_listener().await;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config.clone(), listener, async move {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid url")
            .connect_lazy();
        wait_until_serving(&channel).await;
        Self {
            addr,
            channel,
            config,
            redis,
            db,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestAuth {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls the health service until it reports SERVING (migrations done).
pub async fn wait_until_serving(channel: &Channel) {
    for _ in 0..200 {
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
    panic!("server did not become healthy within 10 s");
}
