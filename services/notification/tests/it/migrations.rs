//! Migrations applied to a database that already holds data.

use quill_notification::server::MIGRATOR;
use quill_server::testing::TestDb;
use sqlx::{PgPool, migrate::Migrator};
use uuid::Uuid;

async fn insert(pool: &PgPool, id: Uuid, user: Uuid, created_at: &str) {
    sqlx::query(
        "INSERT INTO notifications (id, user_id, kind, title, event_id, created_at)
         VALUES ($1, $2, 'welcome', 'Hi', $3, $4::timestamptz)",
    )
    .bind(id)
    .bind(user)
    .bind(Uuid::now_v7())
    .bind(created_at)
    .execute(pool)
    .await
    .expect("insert a notification");
}

async fn seq(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT seq FROM notifications WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("seq")
}

/// Notifications from before `seq` existed are numbered per user in the
/// order resumes read them until then (creation time, then id), and each
/// user's count goes on from there.
#[tokio::test]
async fn notifications_created_before_seq_are_numbered_in_their_old_order() {
    let database = TestDb::new("notification_migrate");
    let pool = database.connect(1).await;
    let before_seq = MIGRATOR.iter().filter(|m| m.version < 7).cloned();
    Migrator::with_migrations(before_seq.collect())
        .run(&pool)
        .await
        .expect("migrations before seq");
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let [early_low, early_high, late] = {
        let mut ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        ids[..2].sort();
        ids
    };
    insert(&pool, late, ada, "2026-01-02T00:00:00Z").await;
    insert(&pool, early_high, ada, "2026-01-01T00:00:00Z").await;
    insert(&pool, early_low, ada, "2026-01-01T00:00:00Z").await;
    let bobs = Uuid::new_v4();
    insert(&pool, bobs, bob, "2026-01-03T00:00:00Z").await;

    MIGRATOR.run(&pool).await.expect("every migration");

    assert_eq!(seq(&pool, early_low).await, 1);
    assert_eq!(seq(&pool, early_high).await, 2);
    assert_eq!(seq(&pool, late).await, 3);
    assert_eq!(seq(&pool, bobs).await, 1);
    let (adas_next, newcomers) = (Uuid::now_v7(), Uuid::now_v7());
    insert(&pool, adas_next, ada, "2026-01-01T00:00:00Z").await;
    insert(&pool, newcomers, Uuid::new_v4(), "2026-01-01T00:00:00Z").await;
    assert_eq!(seq(&pool, adas_next).await, 4);
    assert_eq!(seq(&pool, newcomers).await, 1);
}
