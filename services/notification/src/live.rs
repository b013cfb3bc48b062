//! Live delivery. Every instance LISTENs on PostgreSQL: a notification of
//! a user some instance watches (see [`crate::watching`]) is announced
//! with NOTIFY in the transaction that creates it, so each instance hears
//! each commit (never an uncommitted or rolled-back one), whichever
//! replica consumed the event, and pushes it to its own subscribers of
//! that user through an in-process broadcast.
//!
//! A notification this instance's own consumer committed is pushed at
//! once, from the rows its statement returned, when that keeps its user's
//! stream in order (see [`Hub::publish_committed`]); its announcement is
//! then skipped rather than read back. Everything else comes by NOTIFY,
//! which delivers in commit order.
//!
//! NOTIFY is fire-and-forget: while an instance's listener connection is
//! down, it misses announcements. So when the listener reconnects, every
//! stream of the instance ends, as does a stream too slow to keep up with
//! its buffer; a client resumes from the last notification it received
//! (`Last-Event-ID`, `SubscribeRequest.after_id`) and is sent what it
//! missed, then the live ones.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::{Stream, StreamExt};
use quill_platform::{
    metrics,
    retry::Backoff,
    shutdown::{CancellationToken, sleep_or_cancelled},
};
use sqlx::{
    PgPool,
    postgres::{PgListener, PgNotification, PgPoolOptions},
};
use tokio::sync::{Notify, broadcast};
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use uuid::Uuid;

use crate::{
    config::StreamLimits,
    error::NotificationError,
    inbox::Notification,
    repo::{MAIL_CHANNEL, NOTIFICATIONS_CHANNEL, SINGLE_NOTIFICATIONS_CHANNEL, notifications},
};

/// Notifications buffered per user for a slow stream; a subscriber that
/// falls further behind skips the oldest (they stay in the list).
const PER_USER_BUFFER: usize = 64;

/// Notifications pushed as committed here whose announcements are still
/// to come, remembered so that the listener skips them; beyond this many,
/// the oldest are forgotten, and their announcements read and dropped as
/// already pushed (by `seq`).
const COMMITTED_HERE_REMEMBERED: usize = 4096;

/// Open streams by user and in all, behind one lock so that a cap is
/// checked and taken in one step.
#[derive(Default)]
struct Streams {
    users: HashMap<Uuid, UserStreams>,
    open: usize,
    /// Cancelled when the streams open now may have missed something
    /// (the listener reconnected); replaced for the streams opened after.
    missed: CancellationToken,
    committed_here: CommittedHere,
}

/// One user's live streams.
struct UserStreams {
    sender: broadcast::Sender<Notification>,
    /// The user's notifications up to this `seq` need no push: each was
    /// pushed, or is before the position every open stream started from.
    /// `None` until known. Pushes go out in `seq` order only.
    settled: Option<i64>,
}

impl UserStreams {
    /// Sends `notification` to the user's streams if `goes`, asked with the
    /// last seq settled and the notification's, says so; it is then the
    /// last settled. Returns whether it went.
    fn push_if(
        &mut self,
        notification: Notification,
        goes: impl FnOnce(Option<i64>, i64) -> bool,
    ) -> bool {
        if !goes(self.settled, notification.seq) {
            return false;
        }
        self.settled = Some(notification.seq);
        // No receiver left: the entry goes when its last stream drops.
        let _ = self.sender.send(notification);
        true
    }
}

/// Ids pushed as committed here, oldest first.
#[derive(Default)]
struct CommittedHere {
    ids: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl CommittedHere {
    fn remember(&mut self, id: Uuid) {
        // Ids taken since leave the queue once they reach its front.
        while self
            .order
            .front()
            .is_some_and(|front| !self.ids.contains(front))
        {
            self.order.pop_front();
        }
        if self.order.len() >= COMMITTED_HERE_REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id);
        self.order.push_back(id);
    }

    /// Whether `id` was pushed as committed here; it is forgotten, as its
    /// one announcement has come.
    fn take(&mut self, id: Uuid) -> bool {
        self.ids.remove(&id)
    }
}

/// The live subscribers of this instance, by user.
#[derive(Clone)]
pub struct Hub {
    streams: Arc<Mutex<Streams>>,
    /// Cancelled when the server starts to drain: every stream ends then,
    /// so the drain is not held up by subscribers that would never leave.
    closing: CancellationToken,
    limits: StreamLimits,
}

impl Hub {
    pub fn new(limits: StreamLimits, closing: CancellationToken) -> Self {
        Self {
            streams: Arc::default(),
            closing,
            limits,
        }
    }

    /// A live stream of `user`'s notifications, unless `user` already has
    /// as many as one user may, or the instance as many as it may. The
    /// user's own cap is checked first, so whoever hoards is told so.
    pub fn subscribe(&self, user: Uuid) -> Result<Subscription, NotificationError> {
        let mut streams = lock(&self.streams);
        if self.closing.is_cancelled() {
            // Its sender is gone at once: the stream ends immediately.
            return Ok(Subscription {
                user,
                streams: Arc::clone(&self.streams),
                stream: Some(BroadcastStream::new(broadcast::channel(1).1)),
                closing: Box::pin(self.closing.clone().cancelled_owned()),
                missed: Box::pin(streams.missed.clone().cancelled_owned()),
                counted: false,
            });
        }
        // Each subscription holds exactly one receiver of its user's sender.
        let users_open = streams
            .users
            .get(&user)
            .map_or(0, |u| u.sender.receiver_count());
        if users_open >= self.limits.per_user {
            return Err(NotificationError::TooManyStreams(
                "too many live notification streams for this user; close one first",
            ));
        }
        if streams.open >= self.limits.total {
            return Err(NotificationError::TooManyStreams(
                "this server holds all the live notification streams it may; retry later",
            ));
        }
        let receiver = streams
            .users
            .entry(user)
            .or_insert_with(|| UserStreams {
                sender: broadcast::channel(PER_USER_BUFFER).0,
                settled: None,
            })
            .sender
            .subscribe();
        streams.open += 1;
        Ok(Subscription {
            user,
            streams: Arc::clone(&self.streams),
            stream: Some(BroadcastStream::new(receiver)),
            closing: Box::pin(self.closing.clone().cancelled_owned()),
            missed: Box::pin(streams.missed.clone().cancelled_owned()),
            counted: true,
        })
    }

    /// Ends every stream open now: announcements may have been missed, and
    /// a stream that resumes from its last notification gets them.
    pub fn end_streams_that_may_have_missed(&self) {
        let mut streams = lock(&self.streams);
        std::mem::take(&mut streams.missed).cancel();
    }

    /// Every user with a stream open here, in id order.
    pub fn watched_users(&self) -> Vec<Uuid> {
        let mut users: Vec<Uuid> = lock(&self.streams).users.keys().copied().collect();
        users.sort_unstable();
        users
    }

    /// Of `users`, those with a stream open here.
    pub fn watched_among(&self, users: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
        let streams = lock(&self.streams);
        let mut watched: Vec<Uuid> = users
            .into_iter()
            .filter(|user| streams.users.contains_key(user))
            .collect();
        watched.sort_unstable();
        watched.dedup();
        watched
    }

    /// Pushes a notification this instance's consumer has just committed,
    /// if it is the next of its user's (`seq` right after the last pushed):
    /// no stream can then be waiting for one before it. Otherwise one
    /// committed elsewhere may be: it goes by its announcement, in commit
    /// order. Returns whether it went now.
    pub fn publish_committed(&self, user: Uuid, notification: Notification) -> bool {
        let mut streams = lock(&self.streams);
        let id = notification.id;
        let pushed = streams
            .users
            .get_mut(&user)
            .is_some_and(|own| own.push_if(notification, |settled, seq| settled == Some(seq - 1)));
        if pushed {
            streams.committed_here.remember(id);
        }
        pushed
    }

    /// Whether the listener must read the announced notification `id` of
    /// `user`: watched here, and not pushed as committed here already.
    fn needs_read(&self, user: Uuid, id: Uuid) -> bool {
        let mut streams = lock(&self.streams);
        !streams.committed_here.take(id) && streams.users.contains_key(&user)
    }

    /// Pushes an announced notification, unless it was pushed already
    /// (announcements come in commit order, so one at or before the last
    /// pushed was). Returns whether it went.
    fn publish_announced(&self, user: Uuid, notification: Notification) -> bool {
        lock(&self.streams).users.get_mut(&user).is_some_and(|own| {
            own.push_if(notification, |settled, seq| {
                settled.is_none_or(|settled| seq > settled)
            })
        })
    }
}

/// A poisoned lock only means another thread panicked mid-update of a map
/// that stays consistent; keep serving.
fn lock(streams: &Mutex<Streams>) -> std::sync::MutexGuard<'_, Streams> {
    streams.lock().unwrap_or_else(|e| e.into_inner())
}

/// One user's live notifications; unregisters itself and gives its slot
/// back when dropped (the client went away).
pub struct Subscription {
    user: Uuid,
    streams: Arc<Mutex<Streams>>,
    /// Taken only on drop, under the hub's lock.
    stream: Option<BroadcastStream<Notification>>,
    /// Ends the stream when the hub closes.
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Ends the stream when it may have missed an announcement.
    missed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Whether it holds a slot (not when opened during shutdown).
    counted: bool,
}

impl Subscription {
    /// This stream starts after `seq`: it reads what came before itself.
    /// When it is its user's only one, nothing up to `seq` needs a push any
    /// more, so the next one committed here can go at once. With others
    /// open, one of them may still be owed those.
    pub fn starts_after(&self, seq: i64) {
        if !self.counted {
            return;
        }
        if let Some(own) = lock(&self.streams).users.get_mut(&self.user)
            && own.settled.is_none()
            && own.sender.receiver_count() == 1
        {
            own.settled = Some(seq);
        }
    }
}

impl Stream for Subscription {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.closing.as_mut().poll(cx).is_ready() || self.missed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match stream.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(notification))) => Poll::Ready(Some(notification)),
            Poll::Ready(Some(Err(lagged))) => {
                // Skipping would lose them for good; ended, the client
                // resumes from its last one and is sent them.
                tracing::debug!(user = %self.user, %lagged, "slow subscriber fell behind; its stream ends");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut streams = lock(&self.streams);
        if self.counted {
            streams.open = streams.open.saturating_sub(1);
        }
        // Dropped under the lock: two streams of one user leaving at once
        // must not each see the other's receiver and leave the entry behind.
        drop(self.stream.take());
        if streams
            .users
            .get(&self.user)
            .is_some_and(|s| s.sender.receiver_count() == 0)
        {
            streams.users.remove(&self.user);
        }
    }
}

/// The instance's LISTEN connection, fanning announcements out to the hub
/// and waking the mail sender.
pub struct Listener {
    pool: PgPool,
    listener: PgListener,
    hub: Hub,
    mail_wakeup: Arc<Notify>,
}

impl Listener {
    /// Connects and LISTENs before returning, so nothing committed after
    /// start-up is missed.
    pub async fn connect(
        pool: PgPool,
        hub: Hub,
        mail_wakeup: Arc<Notify>,
    ) -> Result<Self, sqlx::Error> {
        let listener = listen(&pool).await?;
        Ok(Self {
            pool,
            listener,
            hub,
            mail_wakeup,
        })
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.listener.try_recv() => received,
            };
            let lost = match received {
                Ok(Some(notification)) => {
                    // What arrived during the last read goes with it: one
                    // read for all.
                    let mut announced = vec![notification];
                    announced.extend(std::iter::from_fn(|| self.listener.next_buffered()));
                    match self.dispatch(&announced).await {
                        Ok(()) => {
                            backoff.reset();
                            continue;
                        }
                        // Read on the listener's own connection, which is
                        // then most likely gone too: ending the streams now
                        // would let them resume while nothing listens, and
                        // end them again at the reconnect.
                        Err(e) => format!("cannot load announced notifications: {e}"),
                    }
                }
                Ok(None) => "connection lost".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(error = %lost, "notification listener reconnecting");
            // Mail queued meanwhile would otherwise wait for the poll.
            self.mail_wakeup.notify_one();
            // A listener of our own (not the lost one's silent reconnect),
            // so it is known when LISTEN holds again: only then do the open
            // streams end, so that those resuming miss nothing more.
            loop {
                // Before every attempt: a connection that dies right after
                // LISTEN must not spin, ending every stream each time.
                if sleep_or_cancelled(backoff.next_delay(), &shutdown).await {
                    return;
                }
                match listen(&self.pool).await {
                    Ok(listener) => {
                        self.listener = listener;
                        self.hub.end_streams_that_may_have_missed();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener cannot connect");
                    }
                }
            }
        }
    }

    /// Pushes what `announcements` announced to this instance's
    /// subscribers, in order, read on the listener's own connection: no
    /// wait for the service's pool, which the consumers' batches hold
    /// under load, and no ping as a connection goes back to it. Fails, and
    /// pushes none of them, when that read does: pushing later ones would
    /// move a client past these.
    async fn dispatch(&mut self, announcements: &[PgNotification]) -> Result<(), sqlx::Error> {
        // Most users are not connected: only their subscribers cost a read,
        // one for all of the announcements'.
        let mut watched = Vec::new();
        for announced in announcements {
            if announced.channel() == MAIL_CHANNEL {
                self.mail_wakeup.notify_one();
                continue;
            }
            for line in announced.payload().lines() {
                match parse_announcement(line) {
                    Some((user, id)) if self.hub.needs_read(user, id) => watched.push((user, id)),
                    Some(_) => {}
                    None => {
                        // Its user may be watched here: ended, their streams
                        // resume and are sent what it announced.
                        tracing::warn!(
                            line,
                            "unreadable notification announcement; streams end to resume"
                        );
                        self.hub.end_streams_that_may_have_missed();
                    }
                }
            }
        }
        if watched.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = watched.iter().map(|(_, id)| *id).collect();
        let mut rows: HashMap<Uuid, notifications::NotificationRow> =
            notifications::by_ids(&mut self.listener, &ids)
                .await?
                .into_iter()
                .map(|row| (row.id, row))
                .collect();
        // In the announced order: each user's in their stream's.
        let mut pushed = 0;
        for (user, id) in watched {
            if let Some(row) = rows.remove(&id)
                && self.hub.publish_announced(user, row.into())
            {
                pushed += 1;
            }
        }
        metrics::get()
            .notifications_pushed
            .with_label_values(&["announced"])
            .inc_by(pushed);
        Ok(())
    }
}

/// One line of an announcement: `"<user id> <notification id>"`.
fn parse_announcement(line: &str) -> Option<(Uuid, Uuid)> {
    let (user, id) = line.split_once(' ')?;
    Some((Uuid::parse_str(user).ok()?, Uuid::parse_str(id).ok()?))
}

/// The listener connection's `application_name`: it also runs the reads of
/// what was announced, so its last query is rarely `LISTEN`, and this is
/// how an operator (or a test) finds it in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "quill-notification-listener";

/// LISTENs on a connection of its own, outside the service's pool (so its
/// reads never wait for the consumers' batches), named at connect.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name(LISTENER_APPLICATION_NAME);
    // What `PgListener::connect` builds for a URL: one connection, kept.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    let mut listener = PgListener::connect_with(&own).await?;
    listener
        .listen_all([
            NOTIFICATIONS_CHANNEL,
            SINGLE_NOTIFICATIONS_CHANNEL,
            MAIL_CHANNEL,
        ])
        .await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;
    use quill_server::testing::TestDb;

    use super::*;
    use crate::{
        repo::notifications::{Announce, Delivery},
        server::MIGRATOR,
    };

    fn hub(per_user: usize, total: usize) -> Hub {
        Hub::new(StreamLimits { per_user, total }, CancellationToken::new())
    }

    fn refused(result: Result<Subscription, NotificationError>) -> bool {
        matches!(result, Err(NotificationError::TooManyStreams(_)))
    }

    #[test]
    fn one_user_gets_at_most_their_share() {
        let hub = hub(2, 10);
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = hub.subscribe(ada).unwrap();
        let _second = hub.subscribe(ada).unwrap();
        assert!(refused(hub.subscribe(ada)));
        assert!(hub.subscribe(bob).is_ok());
        drop(first);
        assert!(hub.subscribe(ada).is_ok());
    }

    #[test]
    fn the_instance_holds_at_most_its_total() {
        let hub = hub(5, 2);
        let first = hub.subscribe(Uuid::now_v7()).unwrap();
        let _second = hub.subscribe(Uuid::now_v7()).unwrap();
        assert!(refused(hub.subscribe(Uuid::now_v7())));
        drop(first);
        assert!(hub.subscribe(Uuid::now_v7()).is_ok());
    }

    fn numbered(seq: i64) -> Notification {
        Notification {
            id: Uuid::now_v7(),
            kind: None,
            title: format!("number {seq}"),
            body: String::new(),
            actor_username: None,
            article_slug: None,
            read: false,
            created_at: chrono::Utc::now(),
            seq,
        }
    }

    /// What the stream has been pushed so far, by seq.
    fn received(stream: &mut Subscription) -> Vec<i64> {
        std::iter::from_fn(|| stream.next().now_or_never().flatten())
            .map(|n| n.seq)
            .collect()
    }

    #[test]
    fn a_notification_committed_here_goes_at_once_only_as_the_next_of_its_user() {
        let hub = hub(5, 10);
        let user = Uuid::now_v7();
        let mut stream = hub.subscribe(user).unwrap();
        // Where the stream starts is not known yet: wait for announcements.
        assert!(!hub.publish_committed(user, numbered(1)));
        stream.starts_after(1);
        assert!(hub.publish_committed(user, numbered(2)));
        // 3 may be committed elsewhere and on its way: 4 waits for its turn.
        assert!(!hub.publish_committed(user, numbered(4)));
        assert!(hub.publish_announced(user, numbered(3)));
        assert!(hub.publish_announced(user, numbered(4)));
        assert!(hub.publish_committed(user, numbered(5)));
        // The announcements of what went already are dropped.
        assert!(!hub.publish_announced(user, numbered(2)));
        assert!(!hub.publish_announced(user, numbered(5)));
        assert_eq!(received(&mut stream), [2, 3, 4, 5]);
    }

    #[test]
    fn a_stream_starting_beside_another_leaves_the_order_to_the_announcements() {
        let hub = hub(5, 10);
        let user = Uuid::now_v7();
        let mut behind = hub.subscribe(user).unwrap();
        let ahead = hub.subscribe(user).unwrap();
        // The first stream may still be owed what the second read itself.
        ahead.starts_after(7);
        assert!(!hub.publish_committed(user, numbered(8)));
        assert!(hub.publish_announced(user, numbered(6)));
        assert_eq!(received(&mut behind), [6]);
    }

    #[test]
    fn the_listener_skips_what_went_at_once_and_reads_the_rest() {
        let hub = hub(5, 10);
        let (watched, unwatched) = (Uuid::now_v7(), Uuid::now_v7());
        let stream = hub.subscribe(watched).unwrap();
        stream.starts_after(0);
        let pushed = numbered(1);
        let id = pushed.id;
        assert!(hub.publish_committed(watched, pushed));
        assert!(!hub.needs_read(watched, id));
        assert!(hub.needs_read(watched, Uuid::now_v7()));
        assert!(!hub.needs_read(unwatched, Uuid::now_v7()));
        assert_eq!(hub.watched_among([unwatched, watched, watched]), [watched]);
    }

    #[test]
    fn a_stream_opened_while_closing_leaves_the_users_open_one_watched() {
        let hub = hub(5, 10);
        let user = Uuid::now_v7();
        let _open = hub.subscribe(user).unwrap();
        hub.closing.cancel();
        drop(hub.subscribe(user).unwrap());
        assert_eq!(hub.watched_among([user]), [user]);
    }

    #[test]
    fn ids_pushed_at_once_are_remembered_up_to_a_bound() {
        let mut committed = CommittedHere::default();
        let ids: Vec<Uuid> = (0..=COMMITTED_HERE_REMEMBERED)
            .map(|_| Uuid::now_v7())
            .collect();
        for id in &ids {
            committed.remember(*id);
        }
        assert!(!committed.take(ids[0]), "the oldest is forgotten");
        assert!(committed.take(ids[1]));
        assert!(!committed.take(ids[1]), "an announcement comes once");
        // The taken ones leave the queue as it moves on; it stays bounded.
        for _ in 0..COMMITTED_HERE_REMEMBERED {
            committed.remember(Uuid::now_v7());
        }
        assert_eq!(committed.order.len(), COMMITTED_HERE_REMEMBERED);
        assert_eq!(committed.ids.len(), COMMITTED_HERE_REMEMBERED);
    }

    #[test]
    fn streams_opened_after_close_hold_no_slot() {
        let hub = hub(1, 1);
        hub.closing.cancel();
        let user = Uuid::now_v7();
        let _ended = hub.subscribe(user).unwrap();
        assert!(hub.subscribe(user).is_ok());
    }

    /// The listener reads what was announced on its own connection, so a
    /// failed read most likely means a lost listener. The streams end
    /// once, when LISTEN holds again: a stream resumed at once is sent
    /// what is announced next rather than ended a second time.
    #[tokio::test]
    async fn a_failed_read_back_ends_the_streams_once_listening_again() {
        const WAIT: Duration = Duration::from_secs(10);
        let db = TestDb::new("notification_live");
        let pool = db.connect(4).await;
        MIGRATOR.run(&pool).await.expect("migrations");
        let hub = hub(5, 10);
        let listener = Listener::connect(pool.clone(), hub.clone(), Arc::default())
            .await
            .expect("listener");
        let stop = CancellationToken::new();
        let listening = tokio::spawn(listener.run(stop.clone()));
        let user = Uuid::now_v7();
        let mut stream = hub.subscribe(user).expect("stream");

        // The read of an announcement waits behind a lock, and the
        // listener's connection is killed meanwhile.
        let mut lock = pool.begin().await.expect("begin");
        sqlx::query("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .expect("lock");
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFICATIONS_CHANNEL)
            .bind(format!("{user} {}", Uuid::now_v7()))
            .execute(&pool)
            .await
            .expect("announce");
        let reading = tokio::time::timeout(WAIT, async {
            loop {
                let waiting: Option<i32> = sqlx::query_scalar(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                     AND application_name = $1 AND wait_event_type = 'Lock'",
                )
                .bind(LISTENER_APPLICATION_NAME)
                .fetch_optional(&pool)
                .await
                .expect("activity");
                if let Some(pid) = waiting {
                    break pid;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the listener's read waits for the lock");
        // Waits until the backend has exited: the lock must not be granted
        // to a read that would then succeed.
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(reading)
            .fetch_one(&pool)
            .await
            .expect("terminate");
        assert!(terminated, "the listener's connection is gone");
        lock.rollback().await.expect("unlock");

        let ended = tokio::time::timeout(WAIT, stream.next()).await;
        assert!(matches!(ended, Ok(None)), "ended: {ended:?}");
        drop(stream);
        let mut resumed = hub.subscribe(user).expect("stream");
        let mut conn = pool.acquire().await.expect("conn");
        let created = notifications::insert_all(
            &mut conn,
            &[Delivery::followed(user)],
            &[user],
            Announce::All,
        )
        .await
        .expect("a notification");
        let pushed = tokio::time::timeout(WAIT, resumed.next()).await;
        assert!(
            matches!(&pushed, Ok(Some(n)) if n.id == created[0].id),
            "pushed to the resumed stream: {pushed:?}"
        );
        stop.cancel();
        listening.await.expect("listener");
    }
}
