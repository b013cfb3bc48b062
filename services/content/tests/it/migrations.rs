//! Replicas of one service share its database and all migrate it at start;
//! the pool they share it through.

use quill_content::server::MIGRATOR;
use quill_server::{db, testing::TestDb};

/// Content's migrations include `CREATE INDEX CONCURRENTLY`, which waits
/// for every open transaction: with sqlx's blocking migration lock the
/// replicas waiting for it were such transactions, and PostgreSQL broke the
/// deadlock by failing a replica's start.
#[tokio::test]
async fn replicas_starting_together_migrate_a_fresh_database_once() {
    let database = TestDb::new("content_migrate");
    let config = database.config(2);
    let starts = (0..4).map(|_| db::prepare(&config, &MIGRATOR));
    for started in futures::future::join_all(starts).await {
        started.expect("every replica starts");
    }

    let pool = database.connect(1).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATOR.iter().count() as i64);
}

/// The pool pings a connection before handing it out only when it sat idle
/// (sqlx pings each one on its release anyway): one cut while idle, as by
/// a server restart, is replaced, not given to a statement that fails.
#[tokio::test]
async fn a_connection_cut_while_idle_is_replaced_before_use() {
    let database = TestDb::new("content_pool");
    let pool = database.connect(1).await;
    let backend = || async {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
    };
    let first = backend().await.unwrap();
    let admin = database.connect(1).await;
    let cut: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(cut);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;

    let second = backend().await.expect("a live connection, not the cut one");
    assert_ne!(second, first);
}
