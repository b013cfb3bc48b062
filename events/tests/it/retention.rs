//! Retention deletes exactly the rows the backbone has finished with and
//! that are old enough: never an unpublished event, never a recent one.

use std::time::Duration;

use quill_events::{Retention, testing::OUTBOX_AND_INBOX_SQL};
use quill_server::testing::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

const HOUR: Duration = Duration::from_secs(3600);

async fn outbox_row(pool: &PgPool, age_hours: i32, published: bool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (id, routing_key, payload, created_at, published_at)
         VALUES ($1, 'test.event', '\\x00', now() - make_interval(hours => $2),
                 CASE WHEN $3 THEN now() - make_interval(hours => $2) END)",
    )
    .bind(id)
    .bind(age_hours)
    .bind(published)
    .execute(pool)
    .await
    .expect("outbox row");
    id
}

async fn inbox_row(pool: &PgPool, age_hours: i32) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO processed_events (event_id, consumer, processed_at)
         VALUES ($1, 'test', now() - make_interval(hours => $2))",
    )
    .bind(id)
    .bind(age_hours)
    .execute(pool)
    .await
    .expect("inbox row");
    id
}

async fn exists(pool: &PgPool, table: &str, column: &str, id: Uuid) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} = $1)"
    )))
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("lookup")
}

#[tokio::test]
async fn only_finished_rows_past_their_age_are_deleted() {
    let db = TestDb::new("retention");
    let pool = db.connect(2).await;
    sqlx::raw_sql(OUTBOX_AND_INBOX_SQL)
        .execute(&pool)
        .await
        .expect("tables");
    sqlx::raw_sql(
        "CREATE TABLE mail (id uuid PRIMARY KEY, sent_at timestamptz);
         INSERT INTO mail VALUES (gen_random_uuid(), now() - interval '3 hours'),
                                 (gen_random_uuid(), NULL),
                                 (gen_random_uuid(), now());",
    )
    .execute(&pool)
    .await
    .expect("mail table");

    let old_published = outbox_row(&pool, 3, true).await;
    let new_published = outbox_row(&pool, 0, true).await;
    let old_unpublished = outbox_row(&pool, 3, false).await;
    let old_inbox = inbox_row(&pool, 3).await;
    let new_inbox = inbox_row(&pool, 0).await;
    // More than one batch of old rows.
    sqlx::query(
        "INSERT INTO outbox (id, routing_key, payload, published_at)
         SELECT gen_random_uuid(), 'test.event', '\\x00', now() - interval '5 hours'
         FROM generate_series(1, 2500)",
    )
    .execute(&pool)
    .await
    .expect("many old rows");

    let retention =
        Retention::backbone(pool.clone(), 2 * HOUR, HOUR).keep("mail", "sent_at", 2 * HOUR);
    let deleted = retention.sweep().await.expect("sweep");

    assert_eq!(deleted, 2500 + 1 + 1 + 1);
    assert!(!exists(&pool, "outbox", "id", old_published).await);
    assert!(exists(&pool, "outbox", "id", new_published).await);
    assert!(
        exists(&pool, "outbox", "id", old_unpublished).await,
        "never an unpublished event"
    );
    assert!(!exists(&pool, "processed_events", "event_id", old_inbox).await);
    assert!(exists(&pool, "processed_events", "event_id", new_inbox).await);
    let mail_left: i64 = sqlx::query_scalar("SELECT count(*) FROM mail")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(mail_left, 2, "the unsent and the recent mail stay");
    assert_eq!(retention.sweep().await.expect("second sweep"), 0);
}
