//! Database bootstrap: each service owns one PostgreSQL database, created on
//! first start, with its embedded migrations applied before it serves.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Connection, Executor, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

use crate::retry::with_backoff;

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
pub async fn create_database_if_missing(url: &str) -> Result<(), DbError> {
    let options = PgConnectOptions::from_str(url).map_err(DbError::Url)?;
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
            // Another replica created it first (unique_violation / duplicate_database).
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("23505") | Some("42P04")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

/// Opens a pool on `url`, retrying while the server is unreachable.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url).map_err(DbError::Url)?;
    let pool = with_backoff("connecting to PostgreSQL", 10, || {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
    })
    .await?;
    Ok(pool)
}

/// Creates the database if needed, connects and applies `migrator`.
pub async fn prepare(
    url: &str,
    max_connections: u32,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    create_database_if_missing(url).await?;
    let pool = connect(url, max_connections).await?;
    migrator.run(&pool).await?;
    crate::metrics::watch_pool(&pool);
    Ok(pool)
}
