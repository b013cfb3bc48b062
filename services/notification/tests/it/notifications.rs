//! The notification service against real auth, content, PostgreSQL,
//! RabbitMQ and an SMTP server on loopback: each rule, preferences,
//! idempotency, the read API, live streams, and two replicas on one queue.

use crate::support;

use std::{collections::HashSet, time::Duration};

use futures::StreamExt;
use quill_events::new_envelope;
use quill_proto::events::v1::{Followers, envelope::Payload};
use quill_proto::notification::v1::{
    GetPreferencesRequest, KindPreference, ListNotificationsRequest, MarkAllReadRequest,
    MarkReadRequest, NotificationKind, STREAM_POSITION, SubscribeRequest, UnreadCountRequest,
    UpdatePreferencesRequest,
};
use support::{
    Stack, article, commented, eventually, favorited, followed, published, registered, updated,
};
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn a_new_user_gets_a_welcome_notification_and_mail() {
    let stack = Stack::start().await;
    let jake = stack.user("jake");

    stack.publish(registered(&jake)).await;

    let list = stack.wait_for_notifications(&jake, 1).await;
    assert_eq!(list[0].kind(), NotificationKind::Welcome);
    assert_eq!(list[0].title, "Welcome to Quill, jake!");
    assert!(!list[0].read);
    let mails = stack.smtp.wait_for("jake@example.com", 1).await;
    assert_eq!(mails[0].subject, "Welcome to Quill");
    assert_eq!(mails[0].from, "no-reply@quill.localhost");
    assert!(mails[0].body.contains("Hello jake,"), "{:?}", mails[0].body);
}

#[tokio::test]
async fn a_follow_notifies_the_followee() {
    let stack = Stack::start().await;
    let (jake, jane) = (stack.user("jake"), stack.user("jane"));

    stack.publish(followed(&jane, &jake)).await;

    let list = stack.wait_for_notifications(&jake, 1).await;
    assert_eq!(list[0].kind(), NotificationKind::NewFollower);
    assert_eq!(list[0].title, "jane followed you");
    assert_eq!(list[0].actor_username.as_deref(), Some("jane"));
    assert!(stack.list(&jane).await.is_empty());
}

#[tokio::test]
async fn a_comment_notifies_and_mails_the_author_but_not_on_their_own_article() {
    let stack = Stack::start().await;
    let jake = stack.registered("jake").await;
    let jane = stack.user("jane");
    let dragons = article(&jake, "Dragons");

    let own = stack
        .publish(commented(&jake, dragons.clone(), "Adding a note"))
        .await;
    stack.processed(&own).await;
    stack
        .publish(commented(&jane, dragons, "Great read!\nThanks."))
        .await;

    let list = stack.wait_for_notifications(&jake, 2).await;
    let comment = &list[0];
    assert_eq!(comment.kind(), NotificationKind::Comment);
    assert_eq!(comment.title, "jane commented on \"Dragons\"");
    assert_eq!(comment.body, "Great read!\nThanks.");
    assert_eq!(comment.actor_username.as_deref(), Some("jane"));
    assert_eq!(comment.article_slug.as_deref(), Some("dragons"));
    assert_eq!(list[1].kind(), NotificationKind::Welcome);

    // The welcome mail, then the comment mail.
    let mails = stack.smtp.wait_for("jake@example.com", 2).await;
    let mail = mails
        .iter()
        .find(|m| m.subject != "Welcome to Quill")
        .expect("comment mail");
    assert_eq!(mail.to, vec!["jake@example.com".to_owned()]);
    assert_eq!(mail.subject, "jane commented on \"Dragons\"");
    assert!(mail.body.contains("Hello jake,"), "{:?}", mail.body);
    assert!(
        mail.body.contains("Great read!\nThanks."),
        "{:?}",
        mail.body
    );
    assert!(mail.body.contains("/article/dragons"), "{:?}", mail.body);
}

#[tokio::test]
async fn a_mail_queued_before_the_address_is_known_waits_for_it() {
    let stack = Stack::start().await;
    // Events are consumed concurrently: the comment may be applied before
    // the author's registration.
    let jake = stack.user("jake");
    let jane = stack.user("jane");
    let early = stack
        .publish(commented(&jane, article(&jake, "Dragons"), "First!"))
        .await;
    stack.processed(&early).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stack.smtp.mails_to("jake@example.com").is_empty());

    stack.publish(registered(&jake)).await;
    let mails = stack.smtp.wait_for("jake@example.com", 2).await;
    let mut subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        ["Welcome to Quill", "jane commented on \"Dragons\""]
    );
}

#[tokio::test]
async fn a_late_older_user_event_never_brings_back_an_old_address() {
    let stack = Stack::start().await;
    let jake = stack.registered("jake").await;
    let now = chrono::Utc::now();
    let newer = stack
        .publish(updated(&jake, "jake@new.example.com", now))
        .await;
    stack.processed(&newer).await;
    let older = stack
        .publish(updated(
            &jake,
            "jake@old.example.com",
            now - chrono::Duration::seconds(5),
        ))
        .await;
    stack.processed(&older).await;

    stack
        .publish(commented(
            &stack.user("jane"),
            article(&jake, "Dragons"),
            "Hi",
        ))
        .await;
    let mails = stack.smtp.wait_for("jake@new.example.com", 1).await;
    assert_eq!(mails[0].subject, "jane commented on \"Dragons\"");
    assert!(stack.smtp.mails_to("jake@old.example.com").is_empty());
}

#[tokio::test]
async fn a_favorite_notifies_the_author_but_not_their_own() {
    let stack = Stack::start().await;
    let (jake, jane) = (stack.user("jake"), stack.user("jane"));
    let dragons = article(&jake, "Dragons");

    let own = stack.publish(favorited(&jake, dragons.clone())).await;
    stack.processed(&own).await;
    stack.publish(favorited(&jane, dragons)).await;

    let list = stack.wait_for_notifications(&jake, 1).await;
    assert_eq!(list[0].kind(), NotificationKind::Favorite);
    assert_eq!(list[0].title, "jane favorited \"Dragons\"");
    assert_eq!(list[0].article_slug.as_deref(), Some("dragons"));
}

#[tokio::test]
async fn a_new_article_reaches_every_follower_over_several_batches() {
    // 23 followers in batches of 5: five StreamFollowerIds batches.
    let stack = Stack::start_with(|c| c.fanout_batch = 5).await;
    let jake = stack.user("jake");
    let followers: Vec<_> = (0..23).map(|n| stack.user(&format!("reader{n}"))).collect();
    let ids: Vec<Uuid> = followers.iter().map(|f| f.id).collect();
    stack.follow_in_content(jake.id, &ids).await;
    // One follower wants no new-article notifications.
    let picky = &followers[0];
    stack
        .notification
        .client()
        .update_preferences(picky.request(UpdatePreferencesRequest {
            email_enabled: None,
            kinds: vec![KindPreference {
                kind: NotificationKind::NewArticle.into(),
                in_app: false,
                email: true,
            }],
        }))
        .await
        .expect("preferences");

    let event = stack.publish(published(article(&jake, "Dragons"))).await;
    stack.processed(&event).await;

    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, count(*) FROM notifications WHERE kind = 'new_article' GROUP BY user_id",
    )
    .fetch_all(&stack.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 22);
    assert!(rows.iter().all(|(_, n)| *n == 1));
    let reached: HashSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    assert_eq!(reached, ids[1..].iter().copied().collect());
    let list = stack.list(&followers[7]).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].kind(), NotificationKind::NewArticle);
    assert_eq!(list[0].title, "jake published \"Dragons\"");
    assert_eq!(list[0].body, "About Dragons");
    assert!(stack.list(&jake).await.is_empty());
}

/// A new article's event that carries its audience reaches that audience
/// alone: content, where the author has another follower, is not asked.
#[tokio::test]
async fn a_new_article_carrying_its_audience_reaches_it_without_asking_content() {
    let stack = Stack::start().await;
    let jake = stack.user("jake");
    let readers = [stack.user("ada"), stack.user("bob")];
    let known_to_content = stack.user("cleo");
    stack
        .follow_in_content(jake.id, &[known_to_content.id])
        .await;
    let Payload::ArticlePublished(mut carried) = published(article(&jake, "Dragons")) else {
        unreachable!("published() builds a new article");
    };
    carried.followers = Some(Followers {
        user_ids: readers.iter().map(|user| user.id.to_string()).collect(),
    });

    let event = stack.publish(Payload::ArticlePublished(carried)).await;
    stack.processed(&event).await;

    for reader in &readers {
        let listed = stack.list(reader).await;
        assert_eq!(listed.len(), 1, "{}", reader.username);
        assert_eq!(listed[0].kind(), NotificationKind::NewArticle);
    }
    assert!(stack.list(&known_to_content).await.is_empty());
}

/// One fan-out announces more notifications than one NOTIFY payload holds:
/// they go out over several, and the watched followers, sorted last (on
/// the second), are pushed theirs.
#[tokio::test]
async fn a_fan_out_announced_over_several_notifies_reaches_every_watched_follower() {
    let stack = Stack::start().await;
    let jake = stack.user("jake");
    let watched = [stack.user("ada"), stack.user("bob")];
    // Followers whose ids sort before any random one.
    let mut followers: Vec<Uuid> = (1..=149).map(Uuid::from_u128).collect();
    followers.extend(watched.iter().map(|user| user.id));
    stack.follow_in_content(jake.id, &followers).await;
    let mut streams = Vec::new();
    for user in &watched {
        let stream = stack.subscribe(user).await;
        streams.push(stream);
    }

    stack.publish(published(article(&jake, "Dragons"))).await;

    for mut stream in streams {
        let pushed = support::next_pushed(&mut stream).await;
        assert_eq!(pushed.title, "jake published \"Dragons\"");
    }
}

/// The consumer is held back (a backlog, a broker outage) while the
/// author's audience changes: the fan-out reaches whoever followed when the
/// article was published, not whoever follows when the event is consumed.
#[tokio::test]
async fn a_late_new_article_reaches_the_followers_of_its_moment() {
    let stack = Stack::start().await;
    let jake = stack.signed_up("jake").await;
    let steady = stack.signed_up("steady").await;
    let leaver = stack.signed_up("leaver").await;
    let latecomer = stack.signed_up("latecomer").await;
    stack.follow(&steady, &jake, true).await;
    stack.follow(&leaver, &jake, true).await;

    let event = new_envelope("content", published(article(&jake, "Dragons")));
    stack.follow(&leaver, &jake, false).await;
    stack.follow(&latecomer, &jake, true).await;
    stack.publisher.publish(&event).await;
    stack.processed(&event).await;

    let reached: HashSet<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM notifications WHERE kind = 'new_article' AND event_id = $1",
    )
    .bind(Uuid::parse_str(&event.event_id).unwrap())
    .fetch_all(&stack.db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(reached, HashSet::from([steady.id, leaver.id]));
}

#[tokio::test]
async fn preferences_default_to_on_and_switch_channels_off() {
    let stack = Stack::start().await;
    let jake = stack.registered("jake").await;
    let mut client = stack.notification.client();

    let defaults = client
        .get_preferences(jake.request(GetPreferencesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(defaults.email_enabled);
    assert_eq!(defaults.kinds.len(), 5);
    assert!(defaults.kinds.iter().all(|k| k.in_app && k.email));

    // In-app off for followers; comment mail off.
    let updated = client
        .update_preferences(jake.request(UpdatePreferencesRequest {
            email_enabled: None,
            kinds: vec![
                KindPreference {
                    kind: NotificationKind::NewFollower.into(),
                    in_app: false,
                    email: true,
                },
                KindPreference {
                    kind: NotificationKind::Comment.into(),
                    in_app: true,
                    email: false,
                },
            ],
        }))
        .await
        .unwrap()
        .into_inner();
    let comment = updated
        .kinds
        .iter()
        .find(|k| k.kind() == NotificationKind::Comment)
        .unwrap();
    assert!(comment.in_app && !comment.email);

    let jane = stack.user("jane");
    let follow = stack.publish(followed(&jane, &jake)).await;
    let comment = stack
        .publish(commented(&jane, article(&jake, "Dragons"), "Hi"))
        .await;
    stack.processed(&follow).await;
    stack.processed(&comment).await;
    let kinds: Vec<_> = stack.list(&jake).await.iter().map(|n| n.kind()).collect();
    assert_eq!(
        kinds,
        vec![NotificationKind::Comment, NotificationKind::Welcome]
    );
    // Only the welcome mail was queued.
    assert_eq!(stack.queued_mail("jake@example.com").await, 1);

    // The master switch silences mail of kinds still on.
    client
        .update_preferences(jake.request(UpdatePreferencesRequest {
            email_enabled: Some(false),
            kinds: vec![KindPreference {
                kind: NotificationKind::Comment.into(),
                in_app: true,
                email: true,
            }],
        }))
        .await
        .unwrap();
    let again = stack
        .publish(commented(&jane, article(&jake, "Wyverns"), "Hello"))
        .await;
    stack.processed(&again).await;
    assert_eq!(stack.list(&jake).await.len(), 3);
    assert_eq!(stack.queued_mail("jake@example.com").await, 1);

    let unknown = client
        .update_preferences(jake.request(UpdatePreferencesRequest {
            email_enabled: None,
            kinds: vec![KindPreference::default()],
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
}

/// One setting per kind: a list longer than the kinds there are, or one
/// naming a kind twice, is refused before any of it is written.
#[tokio::test]
async fn preferences_name_each_kind_at_most_once() {
    let stack = Stack::start().await;
    let jake = stack.registered("jake").await;
    let mut client = stack.notification.client();
    let off = |kind: NotificationKind| KindPreference {
        kind: kind.into(),
        in_app: false,
        email: false,
    };

    let repeated = client
        .update_preferences(jake.request(UpdatePreferencesRequest {
            email_enabled: None,
            kinds: vec![
                off(NotificationKind::Comment),
                off(NotificationKind::Comment),
            ],
        }))
        .await
        .unwrap_err();
    assert_eq!(repeated.code(), Code::InvalidArgument, "{repeated:?}");
    let flood = client
        .update_preferences(jake.request(UpdatePreferencesRequest {
            email_enabled: None,
            kinds: vec![off(NotificationKind::Comment); 10_000],
        }))
        .await
        .unwrap_err();
    assert_eq!(flood.code(), Code::InvalidArgument, "{flood:?}");

    let kept = client
        .get_preferences(jake.request(GetPreferencesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(kept.kinds.iter().all(|k| k.in_app && k.email), "{kept:?}");
}

#[tokio::test]
async fn the_same_event_twice_has_one_effect() {
    let stack = Stack::start().await;
    let (jake, jane) = (stack.user("jake"), stack.user("jane"));
    let envelope = stack.publish(followed(&jane, &jake)).await;

    stack.publisher.publish(&envelope).await;
    stack.publisher.publish(&envelope).await;
    stack.processed(&envelope).await;
    // Give the redeliveries time to be handled (and ignored).
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(stack.list(&jake).await.len(), 1);
}

#[tokio::test]
async fn notifications_are_listed_counted_and_marked_read_by_their_owner_only() {
    let stack = Stack::start().await;
    let (jake, jane) = (stack.user("jake"), stack.user("jane"));
    for n in 0..3 {
        stack
            .publish(followed(&stack.user(&format!("fan{n}")), &jake))
            .await;
    }
    stack.wait_for_notifications(&jake, 3).await;
    let mut client = stack.notification.client();

    let page = client
        .list_notifications(jake.request(ListNotificationsRequest {
            limit: 2,
            offset: 0,
            unread_only: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.total, 3);
    assert_eq!(page.notifications.len(), 2);
    // Newest first, in commit order: see the commit-order test below.
    let first = page.notifications[0].id.clone();

    let theirs = client
        .mark_read(jane.request(MarkReadRequest { id: first.clone() }))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    let unknown = client
        .mark_read(jake.request(MarkReadRequest {
            id: Uuid::now_v7().to_string(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    client
        .mark_read(jake.request(MarkReadRequest { id: first.clone() }))
        .await
        .unwrap();
    let unread = client
        .unread_count(jake.request(UnreadCountRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unread.count, 2);
    let unread_page = client
        .list_notifications(jake.request(ListNotificationsRequest {
            limit: 10,
            offset: 0,
            unread_only: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unread_page.total, 2);
    assert!(
        unread_page
            .notifications
            .iter()
            .all(|n| n.id != first && !n.read)
    );

    let marked = client
        .mark_all_read(jake.request(MarkAllReadRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(marked.marked, 2);
    let unread = client
        .unread_count(jake.request(UnreadCountRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unread.count, 0);
    assert!(stack.list(&jake).await.iter().all(|n| n.read));

    let anonymous = client
        .unread_count(UnreadCountRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

/// The instance that commits a notification pushes it itself, without
/// reading it back on its announcement.
#[tokio::test]
async fn a_subscriber_receives_new_notifications_live() {
    let stack = Stack::start().await;
    let jake = stack.user("jake");
    let mut stream = stack.subscribe(&jake).await;

    for n in 0..3 {
        let fan = stack.user(&format!("fan{n}"));
        stack.publish(followed(&fan, &jake)).await;
        let pushed = support::next_pushed(&mut stream).await;
        assert_eq!(pushed.kind(), NotificationKind::NewFollower);
        assert_eq!(pushed.title, format!("fan{n} followed you"));
        assert_eq!(stack.list(&jake).await[0].id, pushed.id);
    }
    // This process's pushes: nextest runs each test in a process of its own.
    let pushed = |path| {
        quill_platform::metrics::get()
            .notifications_pushed
            .with_label_values(&[path])
            .get()
    };
    // Its one stream started after the latest, so even the first could go
    // at once. (The listener may still win a race for one now and then,
    // which is as correct: only the path differs.)
    let (committed, announced) = (pushed("committed"), pushed("announced"));
    assert_eq!(committed + announced, 3);
    assert!(committed >= 1, "{committed} of 3 pushed as committed");
}

/// A notification is announced (`NOTIFY`) only if its user has a stream
/// open somewhere: most have none, and every announcement costs a lock at
/// commit and a wake-up of every instance's listener.
#[tokio::test]
async fn only_the_notifications_of_watched_users_are_announced() {
    let stack = Stack::start().await;
    let (jake, ada, fan) = (stack.user("jake"), stack.user("ada"), stack.user("fan"));
    let mut stream = stack.subscribe(&jake).await;
    let mut announcements = sqlx::postgres::PgListener::connect_with(&stack.db)
        .await
        .expect("listener");
    // The service's channel (`repo::NOTIFICATIONS_CHANNEL`).
    announcements
        .listen("quill_notification_pages")
        .await
        .expect("LISTEN");

    stack.publish(followed(&fan, &ada)).await;
    eventually("ada's notification exists", || async {
        !stack.list(&ada).await.is_empty()
    })
    .await;
    stack.publish(followed(&fan, &jake)).await;
    support::next_pushed(&mut stream).await;

    // NOTIFY delivers in commit order: ada's, had it been announced, came
    // before jake's.
    let mut announced = Vec::new();
    while !announced
        .iter()
        .any(|line: &String| line.starts_with(&jake.id.to_string()))
    {
        let next = tokio::time::timeout(support::WAIT, announcements.recv())
            .await
            .expect("jake's announcement in time")
            .expect("announcement");
        announced.extend(next.payload().lines().map(str::to_owned));
    }
    assert!(
        announced
            .iter()
            .all(|line| !line.starts_with(&ada.id.to_string())),
        "ada watches nothing, yet was announced: {announced:?}"
    );
}

#[tokio::test]
async fn two_replicas_on_one_queue_apply_each_event_exactly_once_and_both_push_live() {
    let stack = Stack::start().await;
    let replica = stack.replica().await;
    let jake = stack.user("jake");
    let subscribe = |client: &mut quill_proto::notification::v1::notification_service_client::NotificationServiceClient<tonic::transport::Channel>| {
        let request = jake.request(SubscribeRequest::default());
        let mut client = client.clone();
        async move { client.subscribe(request).await.expect("subscribe").into_inner() }
    };
    let mut on_first = subscribe(&mut stack.notification.client()).await;
    let mut on_replica = subscribe(&mut replica.client()).await;

    // 50 follows, each delivered twice (as after a relay crash).
    for n in 0..50 {
        let envelope = stack
            .publish(followed(&stack.user(&format!("fan{n}")), &jake))
            .await;
        stack.publisher.publish(&envelope).await;
    }

    eventually("50 notifications exist", || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&stack.db)
            .await
            .unwrap();
        count >= 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rows, events): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM notifications")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    assert_eq!((rows, events), (50, 50));

    // Each instance pushed all 50, whichever one consumed the event (its
    // own at once, the other's as announced), once each and in commit order.
    let in_order: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM notifications WHERE user_id = $1 ORDER BY seq")
            .bind(jake.id)
            .fetch_all(&stack.db)
            .await
            .unwrap();
    for stream in [&mut on_first, &mut on_replica] {
        let mut pushed = Vec::new();
        while pushed.len() < 50 {
            let next = support::next_pushed(stream).await;
            pushed.push(next.id);
        }
        assert_eq!(pushed, in_order);
    }
}

/// NOTIFY is fire-and-forget: what is announced while an instance's LISTEN
/// connection is down is never heard. So once it listens again, its open
/// streams end, and a stream resumed from its last notification is sent
/// what came meanwhile, once.
#[tokio::test]
async fn streams_end_when_the_listener_reconnects_and_resume_without_a_gap() {
    let stack = Stack::start().await;
    let (jake, jane, joe) = (stack.user("jake"), stack.user("jane"), stack.user("joe"));
    let mut stream = stack.subscribe(&jake).await;
    stack.publish(followed(&jane, &jake)).await;
    let first = support::next_pushed(&mut stream).await;

    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(quill_notification::LISTENER_APPLICATION_NAME)
    .fetch_all(&stack.db)
    .await
    .expect("terminate the listener");
    assert_eq!(terminated, [true], "one listener connection");
    // Meanwhile, a follow the dead listener cannot announce.
    stack.publish(followed(&joe, &jake)).await;

    let ended = tokio::time::timeout(support::WAIT, async {
        while let Some(item) = stream.next().await {
            item.expect("no error, an end");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the lost listener");

    let mut resumed = stack
        .notification
        .client()
        .subscribe(jake.request(SubscribeRequest {
            after_id: Some(first.id.clone()),
        }))
        .await
        .expect("resume")
        .into_inner();
    let next = support::next_pushed(&mut resumed).await;
    assert_eq!(next.title, "joe followed you");
    let again = tokio::time::timeout(Duration::from_millis(700), resumed.next()).await;
    assert!(again.is_err(), "sent once: {again:?}");
}

/// Two consumers' transactions each create a notification for jake, and
/// the one that began first commits last: a live stream pushed them in
/// commit order, so a resume must follow it, and so does the list. From the one committed first
/// it sends the other; from the one committed last, nothing. (Creation
/// times, taken when each transaction began, order them the other way.)
#[tokio::test]
async fn a_resume_follows_commit_order_not_when_transactions_began() {
    let stack = Stack::start().await;
    let jake = stack.user("jake");

    let mut began_first = stack.db.begin().await.expect("begin");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut began_last = stack.db.begin().await.expect("begin");
    let committed_first =
        support::insert_notification(&mut began_last, jake.id, "committed first").await;
    began_last.commit().await.expect("commit");
    let committed_last =
        support::insert_notification(&mut began_first, jake.id, "committed last").await;
    began_first.commit().await.expect("commit");

    assert_eq!(
        stack.resumed(&jake, &committed_first.to_string()).await,
        ["committed last"]
    );
    assert_eq!(
        stack.resumed(&jake, &committed_last.to_string()).await,
        Vec::<String>::new()
    );
    // The list agrees with the stream: newest first is committed last.
    let listed: Vec<String> = stack
        .notification
        .client()
        .list_notifications(jake.request(ListNotificationsRequest {
            limit: 10,
            offset: 0,
            unread_only: false,
        }))
        .await
        .expect("list")
        .into_inner()
        .notifications
        .into_iter()
        .map(|n| n.title)
        .collect();
    assert_eq!(listed, ["committed last", "committed first"]);
}

/// A stream's response says where it starts, so a client whose stream
/// ends before any notification can resume: from that position it is sent
/// what was created after the disconnect. A stream opened later starts
/// after that one.
#[tokio::test]
async fn a_stream_ended_before_its_first_notification_resumes_from_its_position() {
    let stack = Stack::start().await;
    let (jake, jane) = (stack.user("jake"), stack.user("jane"));
    let position = |opened: &tonic::Response<_>| -> String {
        opened
            .metadata()
            .get(STREAM_POSITION)
            .expect("a position")
            .to_str()
            .expect("text")
            .to_owned()
    };
    let mut client = stack.notification.client();
    let opened = client
        .subscribe(jake.request(SubscribeRequest::default()))
        .await
        .expect("subscribe");
    let before_any = position(&opened);
    drop(opened);

    let follow = stack.publish(followed(&jane, &jake)).await;
    stack.processed(&follow).await;

    assert_eq!(
        stack.resumed(&jake, &before_any).await,
        ["jane followed you"]
    );
    let opened = client
        .subscribe(jake.request(SubscribeRequest::default()))
        .await
        .expect("subscribe");
    let after_it = position(&opened);
    drop(opened);
    assert_eq!(stack.resumed(&jake, &after_it).await, Vec::<String>::new());
}
