//! Isolation for integration tests against the real PostgreSQL: each test
//! gets its own database, dropped when the test ends; and a service
//! running in-process.

use std::{net::SocketAddr, str::FromStr};

use quill_platform::{
    shutdown::CancellationToken,
    testing::{clean_up, ephemeral_listener},
};

use crate::{Service, Serving};
use sqlx::{
    Connection, Executor,
    postgres::{PgConnectOptions, PgConnection},
};

/// Server URL tests create their databases on.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
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
        clean_up(async move {
            let options = PgConnectOptions::from_str(&postgres_server_url())?.database("postgres");
            let mut conn = PgConnection::connect_with(&options).await?;
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .await?;
            Ok(())
        });
    }
}

impl TestDb {
    /// This database as a service's settings name it.
    pub fn config(&self, max_connections: u32) -> crate::db::DatabaseConfig {
        crate::db::DatabaseConfig::new(self.url.clone().into(), max_connections)
    }

    /// Creates the database and opens a pool of `max_connections` on it.
    pub async fn connect(&self, max_connections: u32) -> sqlx::PgPool {
        crate::db::connect(&self.config(max_connections))
            .await
            .expect("test database")
    }
}

/// One of our gRPC servers running in-process on an ephemeral port, for
/// integration tests: started by [`TestServer::spawn`], ready (health
/// SERVING) when that returns, stopped by [`TestServer::stop`] or on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// A lazily connected channel to it.
    pub channel: tonic::transport::Channel,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Runs service `S` with `config` on a fresh listener and waits until
    /// its health service answers. Panics if the server ends during start-up
    /// or is not serving within 20 s.
    pub async fn spawn<S: Service>(config: S::Config) -> Self {
        Self::spawn_with_drain_delay::<S>(config, std::time::Duration::ZERO).await
    }

    /// As [`Self::spawn`], answering for `drain_delay` once asked to stop.
    pub async fn spawn_with_drain_delay<S: Service>(
        config: S::Config,
        drain_delay: std::time::Duration,
    ) -> Self {
        let (listener, addr) = ephemeral_listener().await;
        let stop = CancellationToken::new();
        let server = S::run(
            config,
            Serving {
                listener,
                shutdown: stop.clone(),
                drain_delay,
            },
        );
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("{} server failed: {e:?}", S::NAME);
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid url")
            .connect_lazy();
        let mut server = Self {
            addr,
            channel,
            stop,
            task: Some(task),
        };
        server.wait_until_serving(S::NAME).await;
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

    /// Signals shutdown without waiting for the drain.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }

    /// Signals shutdown and waits (up to 10 s) for the server to drain.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
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
