//! The notifications themselves: created for many users and many events in
//! one statement, read back by their owner, marked read. Each has a `seq`,
//! its place in its user's stream, in commit order: a resumed stream reads
//! after one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::NOTIFICATIONS_CHANNEL;
use crate::rules::Draft;

#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub actor_username: Option<String>,
    pub article_slug: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub seq: i64,
}

const COLUMNS: &str =
    "id, kind, title, body, actor_username, article_slug, read_at, created_at, seq";

/// Notifications announced by one `NOTIFY`: its payload holds a line of
/// 74 bytes for each (`"<user id> <notification id>"` and a newline), and
/// PostgreSQL takes at most 8,000.
pub const ANNOUNCED_PER_NOTIFY: i64 = 100;

/// One event's notification for some users: a row each.
pub struct Delivery {
    pub event_id: Uuid,
    pub draft: Draft,
    /// With the id each row will have, taken when the delivery was planned:
    /// a user's rows are numbered in this order.
    pub rows: Vec<(Uuid, Uuid)>,
}

impl Delivery {
    pub fn new(event_id: Uuid, draft: Draft, users: &[Uuid]) -> Self {
        Self {
            event_id,
            draft,
            rows: users.iter().map(|user| (Uuid::now_v7(), *user)).collect(),
        }
    }
}

#[cfg(test)]
impl Delivery {
    /// A new follower's notification for `user`, as a test's fixture.
    pub(crate) fn followed(user: Uuid) -> Self {
        let draft = Draft {
            kind: crate::rules::Kind::NewFollower,
            title: "fan followed you".to_owned(),
            body: String::new(),
            actor_username: Some("fan".to_owned()),
            article_slug: None,
        };
        Self::new(Uuid::now_v7(), draft, &[user])
    }
}

/// Which of the created notifications [`insert_all`] announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Those of users some instance watches (a lease of [`watch`] runs).
    Watched,
    /// Every one: while instances of a release that takes no leases still
    /// run (`NOTIFICATION_ANNOUNCE_ALL`), whose streams would otherwise
    /// hear of some of their users' notifications and not of others.
    All,
}

/// A created row as [`insert_all`] returns it for a watched user; the rest
/// of it is the delivery's draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub seq: i64,
    pub created_at: DateTime<Utc>,
}

/// Creates every delivery's notifications, except for users who turned
/// their kind off in the app, in one statement, and announces them as
/// `announce` says on [`NOTIFICATIONS_CHANNEL`] (delivered when the
/// transaction commits), up to [`ANNOUNCED_PER_NOTIFY`] in one `NOTIFY`,
/// in each user's `seq` order.
/// A repeat of an event for a user creates nothing. Returns the rows
/// created for the `watched` users, by user, each user's in `seq` order:
/// their numbers are given here, so a caller holding them need not read
/// them back after the commit.
///
/// The statement numbers the rows itself: it adds each user's row count to
/// their counter (`notification_cursors`), taking the counters' row locks
/// in user id order, and gives the rows the numbers just below. Those locks
/// are held until the transaction ends, so a second transaction numbering
/// for the same user waits and numbers after it: for one user, a higher
/// `seq` means committed later. Run it last in a transaction: the locks
/// are then held only for its commit, and a transaction that takes every
/// counter it needs in one sorted statement cannot deadlock with another
/// that does the same. (Gaps are possible where a row is skipped as a
/// repeat; order is all that is promised. A row inserted any other way is
/// numbered by the table's trigger, migration 0007.)
pub async fn insert_all(
    conn: &mut PgConnection,
    deliveries: &[Delivery],
    watched: &[Uuid],
    announce: Announce,
) -> Result<Vec<WatchedRow>, sqlx::Error> {
    let rows: usize = deliveries.iter().map(|d| d.rows.len()).sum();
    if rows == 0 {
        return Ok(Vec::new());
    }
    let (mut ids, mut users, mut drafts) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for (n, delivery) in (1_i64..).zip(deliveries) {
        for (id, user) in &delivery.rows {
            ids.push(*id);
            users.push(*user);
            drafts.push(n);
        }
    }
    let column = |f: fn(&Draft) -> Option<&str>| -> Vec<Option<&str>> {
        deliveries.iter().map(|d| f(&d.draft)).collect()
    };
    let events: Vec<Uuid> = deliveries.iter().map(|d| d.event_id).collect();
    // `announced` is read so that it runs: a plain SELECT in a CTE that
    // nobody reads is skipped (`inserted`, which writes, runs regardless).
    type Row = (i64, Vec<Uuid>, Vec<Uuid>, Vec<i64>, Vec<DateTime<Utc>>);
    let (_notifies, ids, users, seqs, times): Row = sqlx::query_as(
        "WITH drafts AS (
             SELECT * FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                  $9::uuid[])
                 WITH ORDINALITY
                 AS d (kind, title, body, actor_username, article_slug, event_id, n)
         ),
         wanted AS (
             SELECT r.id, r.user_id, d.kind, d.title, d.body, d.actor_username,
                    d.article_slug, d.event_id
             FROM unnest($1::uuid[], $2::uuid[], $3::int8[]) AS r (id, user_id, draft)
             JOIN drafts d ON d.n = r.draft
             LEFT JOIN kind_preferences k ON k.user_id = r.user_id AND k.kind = d.kind
             WHERE coalesce(k.in_app, true)
         ),
         counters AS (
             INSERT INTO notification_cursors AS c (user_id, last_seq)
             SELECT user_id, count(*) FROM wanted GROUP BY user_id ORDER BY user_id
             ON CONFLICT (user_id) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq
             RETURNING c.user_id, c.last_seq, c.watched_until
         ),
         inserted AS (
             INSERT INTO notifications (id, user_id, kind, title, body, actor_username,
                                        article_slug, event_id, seq)
             SELECT w.id, w.user_id, w.kind, w.title, w.body, w.actor_username,
                    w.article_slug, w.event_id,
                    c.last_seq - count(*) OVER (PARTITION BY w.user_id)
                        + row_number() OVER (PARTITION BY w.user_id ORDER BY w.id)
             FROM wanted w JOIN counters c ON c.user_id = w.user_id
             ON CONFLICT (event_id, user_id) DO NOTHING
             RETURNING id, user_id, seq, created_at
         ),
         pages AS MATERIALIZED (
             SELECT string_agg(user_id::text || ' ' || id::text, E'\n' ORDER BY user_id, seq)
                        AS lines
             FROM (SELECT i.*, (row_number() OVER (ORDER BY i.user_id, i.seq) - 1) / $11 AS page
                   FROM inserted i JOIN counters c ON c.user_id = i.user_id
                   WHERE $13 OR c.watched_until > now()) AS numbered
             GROUP BY page
             ORDER BY page
         ),
         announced AS (
             SELECT count(pg_notify($10, lines)) AS notifies FROM pages
         )
         SELECT (SELECT notifies FROM announced), coalesce(w.ids, '{}'),
                coalesce(w.users, '{}'), coalesce(w.seqs, '{}'), coalesce(w.times, '{}')
         FROM (SELECT array_agg(id ORDER BY user_id, seq) AS ids,
                      array_agg(user_id ORDER BY user_id, seq) AS users,
                      array_agg(seq ORDER BY user_id, seq) AS seqs,
                      array_agg(created_at ORDER BY user_id, seq) AS times
               FROM inserted WHERE user_id = ANY($12)) AS w",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&drafts)
    .bind(column(|d| Some(d.kind.as_str())))
    .bind(column(|d| Some(&d.title)))
    .bind(column(|d| Some(&d.body)))
    .bind(column(|d| d.actor_username.as_deref()))
    .bind(column(|d| d.article_slug.as_deref()))
    .bind(&events)
    .bind(NOTIFICATIONS_CHANNEL)
    .bind(ANNOUNCED_PER_NOTIFY)
    .bind(watched)
    .bind(announce == Announce::All)
    .fetch_one(conn)
    .await?;
    Ok(watched_rows(ids, users, seqs, times))
}

fn watched_rows(
    ids: Vec<Uuid>,
    users: Vec<Uuid>,
    seqs: Vec<i64>,
    times: Vec<DateTime<Utc>>,
) -> Vec<WatchedRow> {
    ids.into_iter()
        .zip(users)
        .zip(seqs.into_iter().zip(times))
        .map(|((id, user_id), (seq, created_at))| WatchedRow {
            id,
            user_id,
            seq,
            created_at,
        })
        .collect()
}

/// Leases `users`' notifications to be announced until `lease` from now
/// (or later, if another instance's lease runs longer): an instance with
/// streams of theirs open renews it while they last. Takes each user's
/// counter row lock, in user id order as [`insert_all`] does, so it waits
/// for any transaction numbering for them: whatever such a transaction
/// creates is committed when this returns, and what one that takes the
/// lock after it creates is announced.
pub async fn watch(
    db: impl PgExecutor<'_>,
    users: &[Uuid],
    lease: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notification_cursors AS c (user_id, last_seq, watched_until)
         SELECT user_id, 0, clock_timestamp() + make_interval(secs => $2)
         FROM unnest($1::uuid[]) AS u (user_id)
         ORDER BY user_id
         ON CONFLICT (user_id) DO UPDATE
             SET watched_until = greatest(c.watched_until, excluded.watched_until)",
    )
    .bind(users)
    .bind(lease.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

/// The notifications with these ids, in no particular order.
pub async fn by_ids(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(db)
    .await
}

/// One page of `user`'s notifications, newest first: in their stream's
/// order (`seq`), so the list and a stream never disagree.
pub async fn list(
    db: impl PgExecutor<'_>,
    user: Uuid,
    unread_only: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL)
         ORDER BY seq DESC
         LIMIT $3 OFFSET $4"
    )))
    .bind(user)
    .bind(unread_only)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
}

/// The place of `user`'s notification `id` in their stream; `None` if
/// they have no such notification.
pub async fn seq_of(db: &PgPool, user: Uuid, id: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM notifications WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .fetch_optional(db)
        .await
}

/// `user`'s latest notification in their stream, its id and place; `None`
/// if they have none. Every one before it is committed too: seqs follow
/// commit order.
pub async fn latest(db: &PgPool, user: Uuid) -> Result<Option<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT id, seq FROM notifications WHERE user_id = $1 ORDER BY seq DESC LIMIT 1")
        .bind(user)
        .fetch_optional(db)
        .await
}

/// Up to `limit` of `user`'s notifications after place `seq` in their
/// stream, in its order: what a stream that ended there missed.
pub async fn after(
    db: &PgPool,
    user: Uuid,
    seq: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE user_id = $1 AND seq > $2
         ORDER BY seq
         LIMIT $3"
    )))
    .bind(user)
    .bind(seq)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn count(
    db: impl PgExecutor<'_>,
    user: Uuid,
    unread_only: bool,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL)",
    )
    .bind(user)
    .bind(unread_only)
    .fetch_one(db)
    .await
}

/// Marks one of `user`'s notifications read; `false` if they have no such
/// notification. Marking twice keeps the first time.
pub async fn mark_read(db: impl PgExecutor<'_>, user: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE notifications SET read_at = coalesce(read_at, now())
         WHERE id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

pub async fn mark_all_read(db: impl PgExecutor<'_>, user: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user)
    .execute(db)
    .await?
    .rows_affected())
}
