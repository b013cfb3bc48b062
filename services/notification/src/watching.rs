//! Leases that keep a user's notifications announced while this instance
//! has a stream of theirs open (migration 0012): a stream takes one as it
//! opens, and every lease of the users watched here is renewed while their
//! streams last. Notifications of a user nobody watches are not announced
//! at all, which spares most commits their `NOTIFY`.
//!
//! A lease that lapses while a stream is open would let notifications
//! committed elsewhere pass it unannounced. So when renewals fail for half
//! a lease, every stream of this instance ends while the leases still run;
//! a client resumes from its last notification and misses nothing.

use std::time::Duration;

use quill_platform::shutdown::{CancellationToken, sleep_or_cancelled};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::{error::NotificationError, live::Hub, repo::notifications};

/// How long a lease runs unless renewed.
const LEASE: Duration = Duration::from_secs(60);
/// Renewals per lease: a few may fail before the streams must end.
const RENEWALS_PER_LEASE: u32 = 6;
/// How long a renewal waits for a user's counter row. A transaction may
/// hold one for long (a large fan-out streams its audience in); a renewal
/// waiting behind it would hold the rows it has locked already, and every
/// consumer numbering for those users would wait too. It tries again at
/// the next renewal.
const RENEWAL_LOCK_WAIT: &str = "200ms";

#[derive(Clone)]
pub struct Watching {
    pool: PgPool,
    hub: Hub,
    lease: Duration,
}

impl Watching {
    pub fn new(pool: PgPool, hub: Hub) -> Self {
        Self::with_lease(pool, hub, LEASE)
    }

    fn with_lease(pool: PgPool, hub: Hub, lease: Duration) -> Self {
        Self { pool, hub, lease }
    }

    /// Takes `user`'s lease, for a stream about to read where it starts:
    /// every notification of theirs is then committed already or will be
    /// announced.
    pub async fn start(&self, user: Uuid) -> Result<(), NotificationError> {
        Ok(notifications::watch(&self.pool, &[user], self.lease).await?)
    }

    /// Renews the leases of every user watched here until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let every = self.lease / RENEWALS_PER_LEASE;
        // Each lease runs for at least `lease` after the instant a renewal
        // covering it began; no stream predates the instance.
        let mut covered_since = Instant::now();
        loop {
            if sleep_or_cancelled(every, &shutdown).await {
                return;
            }
            if covered_since.elapsed() >= self.lease / 2 {
                tracing::warn!(
                    "stream leases not renewed for half their term; streams end to resume"
                );
                self.hub.end_streams_that_may_have_missed();
                covered_since = Instant::now();
            }
            let attempt = Instant::now();
            let users = self.hub.watched_users();
            if users.is_empty() {
                covered_since = attempt;
                continue;
            }
            match tokio::time::timeout(every, self.renew(&users)).await {
                Ok(Ok(())) => covered_since = attempt,
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew stream leases"),
                Err(_) => tracing::warn!("renewing stream leases timed out"),
            }
        }
    }

    async fn renew(&self, users: &[Uuid]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(RENEWAL_LOCK_WAIT)
            .execute(&mut *tx)
            .await?;
        notifications::watch(&mut *tx, users, self.lease).await?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use quill_server::testing::TestDb;
    use sqlx::{
        PgConnection,
        postgres::{PgListener, PgPoolOptions},
    };

    use super::*;
    use crate::{
        config::StreamLimits,
        repo::{
            NOTIFICATIONS_CHANNEL,
            notifications::{Announce, Delivery},
        },
        server::MIGRATOR,
    };

    fn hub() -> Hub {
        Hub::new(
            StreamLimits {
                per_user: 5,
                total: 100,
            },
            CancellationToken::new(),
        )
    }

    async fn lease_left(pool: &PgPool, user: Uuid) -> Option<f64> {
        sqlx::query_scalar(
            "SELECT extract(epoch FROM watched_until - now())::float8
             FROM notification_cursors WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(pool)
        .await
        .expect("lease")
        .flatten()
    }

    #[tokio::test]
    async fn the_leases_of_open_streams_are_renewed_and_a_closed_ones_runs_out() {
        let db = TestDb::new("notification_watching");
        let pool = db.connect(2).await;
        MIGRATOR.run(&pool).await.expect("migrations");
        let hub = hub();
        let (kept, closed) = (Uuid::new_v4(), Uuid::new_v4());
        let watching = Watching::with_lease(pool.clone(), hub.clone(), Duration::from_secs(3));
        let _kept_stream = hub.subscribe(kept).expect("stream");
        let closed_stream = hub.subscribe(closed).expect("stream");
        watching.start(kept).await.expect("lease");
        watching.start(closed).await.expect("lease");
        drop(closed_stream);
        let stop = CancellationToken::new();
        let renewals = tokio::spawn(watching.run(stop.clone()));

        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.cancel();
        renewals.await.expect("renewals");

        let kept_left = lease_left(&pool, kept).await.expect("a lease");
        assert!(kept_left > 1.0, "renewed: {kept_left} s left");
        let closed_left = lease_left(&pool, closed).await.expect("a lease");
        assert!(closed_left < 0.0, "ran out: {closed_left} s left");
    }

    /// Creates a notification for `user`; its announcement's line.
    async fn create(conn: &mut PgConnection, user: Uuid) -> String {
        let created = notifications::insert_all(
            conn,
            &[Delivery::followed(user)],
            &[user],
            Announce::Watched,
        )
        .await
        .expect("a notification");
        format!("{user} {}", created[0].id)
    }

    /// The ordering the leases rest on: a stream takes its lease, then
    /// reads where it starts. A transaction that numbered for its user
    /// before the lease was taken, and so announces nothing, is committed
    /// by then (or the stream would start before a notification it is
    /// never told of); one that numbers after, even if it began before,
    /// announces.
    #[tokio::test]
    async fn a_lease_waits_for_a_transaction_numbering_for_its_user_and_later_ones_announce() {
        let db = TestDb::new("notification_watching");
        let pool = db.connect(4).await;
        MIGRATOR.run(&pool).await.expect("migrations");
        let user = Uuid::new_v4();
        let mut announcements = PgListener::connect_with(&pool).await.expect("listener");
        announcements
            .listen(NOTIFICATIONS_CHANNEL)
            .await
            .expect("LISTEN");
        let watching = Watching::new(pool.clone(), hub());
        let mut unannounced = pool.begin().await.expect("transaction");
        create(&mut unannounced, user).await;
        let mut late = pool.begin().await.expect("transaction");
        sqlx::query("SELECT 1")
            .execute(&mut *late)
            .await
            .expect("begun before the lease");
        let lease = tokio::spawn({
            let watching = watching.clone();
            async move { watching.start(user).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!lease.is_finished(), "the lease waits for the transaction");
        unannounced.commit().await.expect("commit");
        lease.await.expect("task").expect("lease");
        let announced = create(&mut late, user).await;
        late.commit().await.expect("commit");

        let heard = tokio::time::timeout(Duration::from_secs(5), announcements.recv())
            .await
            .expect("an announcement in time")
            .expect("announcement");
        assert_eq!(
            heard.payload(),
            announced,
            "only the one numbered under the lease"
        );
    }

    /// For a rolling upgrade from a release whose streams take no lease.
    #[tokio::test]
    async fn announcing_all_announces_a_user_nobody_watches() {
        let db = TestDb::new("notification_watching");
        let pool = db.connect(2).await;
        MIGRATOR.run(&pool).await.expect("migrations");
        let mut announcements = PgListener::connect_with(&pool).await.expect("listener");
        announcements
            .listen(NOTIFICATIONS_CHANNEL)
            .await
            .expect("LISTEN");
        let user = Uuid::new_v4();
        let mut conn = pool.acquire().await.expect("conn");
        notifications::insert_all(&mut conn, &[Delivery::followed(user)], &[], Announce::All)
            .await
            .expect("a notification");

        let heard = tokio::time::timeout(Duration::from_secs(5), announcements.recv())
            .await
            .expect("an announcement in time")
            .expect("announcement");
        assert!(heard.payload().starts_with(&user.to_string()));
    }

    #[tokio::test]
    async fn streams_end_while_their_leases_still_run_when_renewals_fail() {
        // Nothing listens on port 9: every renewal fails.
        let unreachable = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(100))
            .connect_lazy("postgres://postgres@127.0.0.1:9/none")
            .expect("a lazy pool");
        let hub = hub();
        let mut stream = hub.subscribe(Uuid::new_v4()).expect("stream");
        let lease = Duration::from_secs(2);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let renewals =
            tokio::spawn(Watching::with_lease(unreachable, hub, lease).run(stop.clone()));

        let ended = tokio::time::timeout(lease, stream.next()).await;
        assert!(
            matches!(ended, Ok(None)),
            "the stream ended before its lease ran out"
        );
        assert!(started.elapsed() >= lease / 2, "not before half the lease");
        stop.cancel();
        renewals.await.expect("renewals");
    }
}
