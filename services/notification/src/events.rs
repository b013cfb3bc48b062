//! The event handler: applies each event's effects (see `rules`) inside the
//! consumer's transaction, so notifications, queued mail, the recipients
//! model and the inbox row commit together or not at all. Notifications
//! are written last, all of a transaction's events' in one statement
//! (`repo::notifications::insert_all`): numbering them locks each
//! recipient's counter until the commit, which is then just after. A new
//! article's audience comes with its event, or, when too large to carry,
//! is asked of content before the transaction begins (`prepare`), so no
//! batch waits on another service; only an audience too large to hold is
//! streamed inside a transaction, of its own.

use std::{collections::HashMap, time::Duration};

use futures::{Stream, StreamExt, TryStreamExt};
use quill_events::{EventHandler, HandlerError, async_trait};
use quill_platform::grpc::ServiceChannel;
use quill_proto::{
    content::v1::{StreamFollowerIdsRequest, content_service_client::ContentServiceClient},
    events::v1::{ArticlePublished, Envelope, envelope::Payload},
};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    inbox::Notification,
    live::Hub,
    repo::{
        self,
        notifications::{Announce, Delivery, WatchedRow},
    },
    rules::{self, Draft, Effect, MailDraft},
};

/// How long the whole follower stream of one article may take.
const FANOUT_DEADLINE: Duration = Duration::from_secs(60);
/// The largest audience a fan-out holds in memory (two uuids a follower),
/// learned before its transaction and written at its end; a larger one is
/// streamed and written inside the transaction as it arrives.
const FANOUT_ROWS_HELD: usize = 10_000;

pub struct NotificationEvents {
    content: ServiceChannel,
    fanout_batch: u32,
    /// False when no SMTP server is configured: no mail is queued at all,
    /// rather than piling up rows nobody will send.
    mail_enabled: bool,
    /// This instance's live streams, pushed to as soon as a transaction
    /// commits their users' notifications.
    hub: Hub,
    announce: Announce,
}

impl NotificationEvents {
    pub fn new(
        content: ServiceChannel,
        fanout_batch: u32,
        mail_enabled: bool,
        hub: Hub,
        announce: Announce,
    ) -> Self {
        Self {
            content,
            fanout_batch,
            mail_enabled,
            hub,
            announce,
        }
    }

    async fn notify(
        &self,
        conn: &mut PgConnection,
        event_id: Uuid,
        user: Uuid,
        draft: Draft,
        mail: Option<&MailDraft>,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<(), HandlerError> {
        // Whether the app shows it is decided where it is written
        // (`insert_all` reads the kind's in-app switch): only mail needs
        // the preferences here.
        if let Some(mail) = mail.filter(|_| self.mail_enabled) {
            let (_, email) = repo::preferences::delivery(conn, user, draft.kind).await?;
            if email {
                repo::mail::queue_mail(conn, user, mail).await?;
            }
        }
        deliveries.push(Delivery::new(event_id, draft, &[user]));
        Ok(())
    }

    /// The followers of `author` as content streams them, a batch at a
    /// time in id order. The audience is the author's followers when the
    /// event happened (`as_of`), not when it is consumed: after a backlog
    /// or an outage, someone who followed since gets nothing, someone who
    /// unfollowed since still gets it.
    async fn followers(
        &self,
        event: &Envelope,
        author: Uuid,
    ) -> Result<impl Stream<Item = Result<Vec<Uuid>, HandlerError>>, HandlerError> {
        let as_of = event
            .occurred_at
            .ok_or_else(|| HandlerError::permanent("event without occurred_at"))?;
        let mut request = tonic::Request::new(StreamFollowerIdsRequest {
            user_id: author.to_string(),
            batch_size: self.fanout_batch,
            as_of: Some(as_of),
        });
        request.set_timeout(FANOUT_DEADLINE);
        let batches =
            quill_platform::message_limits!(ContentServiceClient::new(self.content.clone()))
                .stream_follower_ids(request)
                .await
                .map_err(content_failed)?
                .into_inner();
        Ok(batches.map(|batch| {
            batch
                .map_err(content_failed)?
                .user_ids
                .iter()
                .map(|id| Uuid::parse_str(id).map_err(HandlerError::permanent))
                .collect()
        }))
    }

    /// Notifies every follower of `author`, in the transaction, for an
    /// audience too large to hold: rows are written as content streams
    /// them. Such an event runs in a transaction of its own (`batchable`),
    /// and content streams in id order, so these writes take the counters'
    /// locks in one order. A failure part-way drops them all and retries
    /// from scratch without duplicates.
    async fn notify_followers(
        &self,
        conn: &mut PgConnection,
        event: &Envelope,
        event_id: Uuid,
        author: Uuid,
        draft: &Draft,
    ) -> Result<(), HandlerError> {
        let batches = self.followers(event, author).await?;
        futures::pin_mut!(batches);
        let mut followers = Vec::new();
        while let Some(batch) = batches.try_next().await? {
            followers.extend(batch);
            if followers.len() >= FANOUT_ROWS_HELD {
                let now = Delivery::new(event_id, draft.clone(), &followers);
                repo::notifications::insert_all(conn, &[now], &[], self.announce).await?;
                followers.clear();
            }
        }
        let rest = Delivery::new(event_id, draft.clone(), &followers);
        repo::notifications::insert_all(conn, &[rest], &[], self.announce).await?;
        Ok(())
    }
}

/// The created rows of the `watched` users (sorted) as their streams show
/// them: each row with the rest of its delivery's draft.
fn to_push(
    deliveries: &[Delivery],
    watched: &[Uuid],
    rows: Vec<WatchedRow>,
) -> Vec<(Uuid, Notification)> {
    if rows.is_empty() {
        return Vec::new();
    }
    // Only the watched users' rows: a fan-out may hold thousands of others.
    let drafts: HashMap<Uuid, &Draft> = deliveries
        .iter()
        .flat_map(|d| {
            d.rows
                .iter()
                .filter(|(_, user)| watched.binary_search(user).is_ok())
                .map(move |(id, _)| (*id, &d.draft))
        })
        .collect();
    rows.into_iter()
        .filter_map(|row| {
            let draft = drafts.get(&row.id)?;
            let notification = Notification {
                id: row.id,
                kind: Some(draft.kind),
                title: draft.title.clone(),
                body: draft.body.clone(),
                actor_username: draft.actor_username.clone(),
                article_slug: draft.article_slug.clone(),
                read: false,
                created_at: row.created_at,
                seq: row.seq,
            };
            Some((row.user_id, notification))
        })
        .collect()
}

/// A fan-out's audience as learned before its transaction.
#[derive(Default)]
pub enum Audience {
    /// The event fans out to no one (or was not prepared: then a fan-out
    /// streams its audience in the transaction, as for `TooLarge`).
    #[default]
    NoFanOut,
    /// Every follower, in id order.
    Followers(Vec<Uuid>),
    /// More than `FANOUT_ROWS_HELD`: streamed inside the transaction.
    TooLarge,
}

/// The audience a new article's event carries (its author's followers as
/// it was published), when it does.
fn carried_followers(envelope: &Envelope) -> Result<Option<Vec<Uuid>>, HandlerError> {
    let Some(Payload::ArticlePublished(ArticlePublished {
        followers: Some(followers),
        ..
    })) = &envelope.payload
    else {
        return Ok(None);
    };
    let ids = followers
        .user_ids
        .iter()
        .map(|id| Uuid::parse_str(id).map_err(HandlerError::permanent))
        .collect::<Result<_, _>>()?;
    Ok(Some(ids))
}

/// content being down is an outage to wait out (the event goes back to the
/// queue untouched); anything else spends one of the event's attempts.
fn content_failed(status: tonic::Status) -> HandlerError {
    if status.code() == tonic::Code::Unavailable {
        HandlerError::unavailable(status)
    } else {
        HandlerError::transient(status)
    }
}

#[async_trait]
impl EventHandler for NotificationEvents {
    /// A new article's audience, asked of content before the transaction.
    type Prepared = Audience;
    /// The notifications the event creates.
    type Deferred = Vec<Delivery>;
    /// The ones for users with a stream open here, to push once committed.
    type Finished = Vec<(Uuid, Notification)>;

    async fn prepare(&self, envelope: &Envelope) -> Result<Audience, HandlerError> {
        let effects = rules::plan(envelope).map_err(HandlerError::permanent)?;
        let Some(author) = effects.iter().find_map(|effect| match effect {
            Effect::NotifyFollowers { author_id, .. } => Some(*author_id),
            _ => None,
        }) else {
            return Ok(Audience::NoFanOut);
        };
        // Content carries at most 500; an audience larger than this holds
        // is streamed in its transaction instead, whoever sent it.
        if let Some(followers) =
            carried_followers(envelope)?.filter(|ids| ids.len() <= FANOUT_ROWS_HELD)
        {
            return Ok(Audience::Followers(followers));
        }
        let batches = self.followers(envelope, author).await?;
        futures::pin_mut!(batches);
        let mut followers = Vec::new();
        while let Some(batch) = batches.try_next().await? {
            followers.extend(batch);
            if followers.len() > FANOUT_ROWS_HELD {
                return Ok(Audience::TooLarge);
            }
        }
        tracing::debug!(%author, audience = followers.len(), "new article's audience");
        Ok(Audience::Followers(followers))
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        envelope: &Envelope,
        audience: &Audience,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<(), HandlerError> {
        let effects = rules::plan(envelope).map_err(HandlerError::permanent)?;
        if effects.is_empty() {
            return Ok(());
        }
        let event_id = Uuid::parse_str(&envelope.event_id).map_err(HandlerError::permanent)?;
        for effect in effects {
            match effect {
                Effect::UpsertRecipient(recipient) => {
                    repo::recipients::upsert_recipient(tx, &recipient).await?;
                }
                Effect::Notify {
                    user_id,
                    draft,
                    mail,
                } => {
                    self.notify(tx, event_id, user_id, draft, mail.as_ref(), deliveries)
                        .await?;
                }
                Effect::NotifyFollowers { author_id, draft } => match audience {
                    Audience::Followers(followers) => {
                        deliveries.push(Delivery::new(event_id, draft, followers));
                    }
                    Audience::NoFanOut | Audience::TooLarge => {
                        self.notify_followers(tx, envelope, event_id, author_id, &draft)
                            .await?;
                    }
                },
            }
        }
        Ok(())
    }

    /// A fan-out whose audience was too large to hold streams it inside its
    /// transaction: alone, so it holds up no batch.
    /// Notifications are written by `finish`; what `handle` writes itself
    /// is a recipient, queued mail, or a fan-out whose audience it does not
    /// hold.
    fn writes_in_handle(&self, envelope: &Envelope, audience: &Audience) -> bool {
        // A plan that fails fails `handle` before it writes anything.
        rules::plan(envelope).is_ok_and(|effects| {
            effects.iter().any(|effect| match effect {
                Effect::UpsertRecipient(_) => true,
                Effect::Notify { mail, .. } => mail.is_some() && self.mail_enabled,
                // Unless its audience is held, a fan-out streams it and
                // writes as it goes.
                Effect::NotifyFollowers { .. } => !matches!(audience, Audience::Followers(_)),
            })
        })
    }

    fn batchable(&self, _envelope: &Envelope, audience: &Audience) -> bool {
        !matches!(audience, Audience::TooLarge)
    }

    async fn finish(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        deliveries: Vec<Vec<Delivery>>,
    ) -> Result<Self::Finished, HandlerError> {
        let deliveries: Vec<Delivery> = deliveries.into_iter().flatten().collect();
        let watched = self.hub.watched_among(
            deliveries
                .iter()
                .flat_map(|d| d.rows.iter().map(|(_, user)| *user)),
        );
        let created =
            repo::notifications::insert_all(tx, &deliveries, &watched, self.announce).await?;
        Ok(to_push(&deliveries, &watched, created))
    }

    /// Pushes the watched users' notifications the transaction created,
    /// each user's in order, without waiting for their announcements (see
    /// [`Hub::publish_committed`] for when one waits all the same).
    async fn committed(&self, _applied: &[&Envelope], to_push: Self::Finished) {
        let mut pushed = 0;
        for (user, notification) in to_push {
            if self.hub.publish_committed(user, notification) {
                pushed += 1;
            }
        }
        quill_platform::metrics::get()
            .notifications_pushed
            .with_label_values(&["committed"])
            .inc_by(pushed);
    }
}
