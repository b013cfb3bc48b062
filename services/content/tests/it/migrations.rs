//! Replicas of one service share its database and all migrate it at start.

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
