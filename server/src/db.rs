//! Database bootstrap: each service owns one PostgreSQL database, created on
//! first start, with its embedded migrations applied before it serves; and
//! the reading of PostgreSQL's errors every service needs.

use std::{str::FromStr, time::Duration};

use quill_platform::{
    config::{ConfigError, Secret},
    metrics,
    retry::with_backoff,
};
use secrecy::ExposeSecret;
use sqlx::{
    Connection, Executor, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE of `CREATE DATABASE` for a name that exists.
const DUPLICATE_DATABASE: &str = "42P04";

/// The constraint a unique violation broke (its index name), if `error` is
/// one: `Some("users_email_key")`. Services map it to their domain error.
pub fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(e) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => e.constraint(),
        _ => None,
    }
}

/// A service's database: where it is, how many connections its pool holds,
/// and the session settings every connection gets.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// May carry a password.
    pub url: Secret,
    pub max_connections: u32,
    /// `SET` on every connection (`plan_cache_mode`...).
    pub session_settings: Vec<(&'static str, &'static str)>,
}

impl DatabaseConfig {
    pub fn new(url: Secret, max_connections: u32) -> Self {
        Self {
            url,
            max_connections,
            session_settings: Vec::new(),
        }
    }

    /// Adds a setting every connection of the pool gets.
    pub fn with_session_setting(mut self, name: &'static str, value: &'static str) -> Self {
        self.session_settings.push((name, value));
        self
    }

    pub fn connect_options(&self) -> Result<PgConnectOptions, DbError> {
        Ok(PgConnectOptions::from_str(self.url.expose_secret())
            .map_err(DbError::Url)?
            .options(self.session_settings.iter().copied()))
    }

    /// Fails unless the URL parses and names a database.
    pub fn validate(&self, setting: &str) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError {
            name: setting.to_owned(),
            value: "<redacted>".to_owned(),
            reason,
        };
        let options = self.connect_options().map_err(|e| invalid(e.to_string()))?;
        if options.get_database().is_none() {
            return Err(invalid("names no database".to_owned()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is invalid: {0}")]
    Url(sqlx::Error),
    #[error("DATABASE_URL names no database")]
    NoDatabase,
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates the database named in `url` if it does not exist yet. Connects to
/// the server's `postgres` maintenance database to do so.
async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), DbError> {
    let name = options
        .get_database()
        .ok_or(DbError::NoDatabase)?
        .to_owned();
    let admin = options.clone().database("postgres");
    let mut conn = with_backoff("connecting to PostgreSQL", 10, || {
        PgConnection::connect_with(&admin)
    })
    .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // Identifiers cannot be bound; quote it, doubling embedded quotes.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match conn
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another replica created it first.
            Err(sqlx::Error::Database(e))
                if matches!(
                    e.code().as_deref(),
                    Some(UNIQUE_VIOLATION | DUPLICATE_DATABASE)
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

/// Creates the database if needed, connects (retrying while the server is
/// unreachable), applies `migrator` and reports the pool's connections as
/// `db_client_connection_count`.
pub async fn prepare(config: &DatabaseConfig, migrator: &Migrator) -> Result<PgPool, DbError> {
    let pool = connect(config).await?;
    migrate(&pool, migrator).await?;
    watch_pool(&pool);
    Ok(pool)
}

/// How often a replica asks again for the migration lock another holds.
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(200);

/// Applies `migrator` while holding the database's migration lock, asking
/// for the lock with `pg_try_advisory_lock` instead of waiting in
/// `pg_advisory_lock` as sqlx does. A replica waiting inside that statement
/// is an open transaction, and `CREATE INDEX CONCURRENTLY` in the replica
/// holding the lock waits for every open transaction to end: replicas that
/// start together against a database with such a migration pending
/// deadlock. The lock key is sqlx's, so a replica of an older build that
/// still locks the sqlx way excludes this one and the other way round.
async fn migrate(pool: &PgPool, migrator: &Migrator) -> Result<(), DbError> {
    // Out of the pool: the lock is the session's, and a pooled connection
    // that failed to unlock would hold it for as long as the process runs.
    // Dropped, this one closes and the lock goes with it.
    let mut conn = pool.acquire().await?.detach();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await?;
    let key = migration_lock_key(&database);
    let mut waiting = false;
    while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut conn)
        .await?
    {
        if !waiting {
            tracing::info!(%database, "another replica is migrating; waiting for it");
            waiting = true;
        }
        tokio::time::sleep(MIGRATION_LOCK_POLL).await;
    }
    let mut unlocked = Migrator::with_migrations(migrator.iter().cloned().collect());
    unlocked.set_locking(false);
    // `run_direct` is what `run` calls; `run` on a pool connection inside a
    // spawned future trips "implementation of `Acquire` is not general
    // enough", the workaround sqlx's own comment names.
    let applied = unlocked.run_direct(None, &mut conn, false).await;
    // Released when the connection closes anyway; unlocking first hands
    // it to a waiting replica at once.
    let released = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    applied?;
    released?;
    Ok(())
}

/// sqlx's advisory lock key for migrating `database`.
fn migration_lock_key(database: &str) -> i64 {
    const CRC_32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    0x3d32ad9e * i64::from(CRC_32.checksum(database.as_bytes()))
}

/// How long a pooled connection may sit idle and still be handed out
/// without a ping first. sqlx pings every connection as it comes back to
/// the pool, so one idle for less was healthy a moment ago; pinging it
/// again on every acquire (sqlx's default) would cost each statement run on
/// the pool a round trip more. One idle for longer may have been cut meanwhile
/// (a server restart, an idle timeout): it is pinged, and replaced if dead.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Creates the database if needed and opens a pool on it, retrying while
/// the server is unreachable.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    let options = config.connect_options()?;
    create_database_if_missing(&options).await?;
    let pool = with_backoff("connecting to PostgreSQL", 10, || {
        PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options.clone())
    })
    .await?;
    Ok(pool)
}

/// Whether the database answers: a readiness probe
/// (`GrpcServer::depends_on("database", db::probe(pool))`).
pub fn probe(
    pool: PgPool,
) -> impl Fn() -> futures::future::BoxFuture<'static, Result<(), sqlx::Error>> + Send + Sync {
    move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&pool).await?;
            Ok(())
        })
    }
}

/// Samples `pool`'s idle and used connections at every scrape: two states
/// that add up to the pool's size, so `sum()` over them never double-counts.
fn watch_pool(pool: &PgPool) {
    let db = pool
        .connect_options()
        .get_database()
        .unwrap_or("postgres")
        .to_owned();
    let pool = pool.clone();
    metrics::add_sampler(
        &format!("db_pool:{db}"),
        Box::new(move |metrics| {
            let size = i64::from(pool.size());
            let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX).min(size);
            let count = &metrics.db_connection_count;
            count.with_label_values(&[db.as_str(), "idle"]).set(idle);
            count
                .with_label_values(&[db.as_str(), "used"])
                .set(size - idle);
            metrics
                .db_connection_max
                .with_label_values(&[db.as_str()])
                .set(i64::from(pool.options().get_max_connections()));
        }),
    );
}
