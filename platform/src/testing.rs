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
