//! The notification rules end to end, through REST only: each action
//! becomes an event (outbox, relay, RabbitMQ), the notification service
//! applies its rule and the recipient's preferences, and the result shows in
//! `GET /api/notifications` and in the mail a real SMTP server on loopback
//! receives. Also: cutting the services off RabbitMQ delays notifications
//! but loses and doubles none, and a poison message is parked in the
//! notification queue's DLQ without stopping the queue.

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use quill_events::new_envelope;
use quill_platform::testing::TcpProxy;
use quill_proto::events::v1::{UserFollowed, envelope::Payload};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestGateway, User, broker_addr};

const WAIT: Duration = Duration::from_secs(20);
/// How long to keep watching for anything unexpected (a duplicate, a
/// notification a rule should not have made) after the expected ones came.
const SETTLE: Duration = Duration::from_millis(500);

/// Polls `user`'s notifications until `done` holds; returns them.
async fn wait_until(
    gw: &TestGateway,
    user: &User,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = gw.notifications(user).await;
        if done(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never got {what}: {list:#?}",
            user.username
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `user` has a notification of `kind`; returns the list.
async fn wait_for_kind(gw: &TestGateway, user: &User, kind: &str) -> Vec<Value> {
    wait_until(gw, user, kind, |list| !of_kind(list, kind).is_empty()).await
}

fn of_kind<'a>(list: &'a [Value], kind: &str) -> Vec<&'a Value> {
    list.iter().filter(|n| n["kind"] == kind).collect()
}

fn kinds(list: &[Value]) -> Vec<&str> {
    list.iter().filter_map(|n| n["kind"].as_str()).collect()
}

fn count_by_kind(list: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for kind in kinds(list) {
        *counts.entry(kind.to_owned()).or_default() += 1;
    }
    counts
}

fn counts(expected: &[(&str, usize)]) -> BTreeMap<String, usize> {
    expected
        .iter()
        .map(|(k, n)| ((*k).to_owned(), *n))
        .collect()
}

fn slug_of(article: &Value) -> String {
    article["slug"].as_str().expect("slug").to_owned()
}

#[tokio::test]
async fn registering_brings_a_welcome_notification_and_a_welcome_mail() {
    let gw = TestGateway::start().await;

    let jake = gw.register("jake").await;

    let list = wait_for_kind(&gw, &jake, "welcome").await;
    assert_eq!(list.len(), 1, "{list:#?}");
    let welcome = &list[0];
    assert_eq!(welcome["title"], "Welcome to Quill, jake!");
    assert!(
        welcome["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("Write your first article")),
        "{welcome}"
    );
    assert_eq!(welcome["actorUsername"], Value::Null);
    assert_eq!(welcome["articleSlug"], Value::Null);
    assert_eq!(welcome["read"], false);
    let unread = gw
        .get("/api/notifications/unread-count", Some(&jake.token))
        .await;
    assert_eq!(unread.status, StatusCode::OK);
    assert_eq!(unread.body, json!({ "count": 1 }));

    let mails = gw.smtp.wait_for("jake@example.com", 1).await;
    let mail = &mails[0];
    assert_eq!(mail.to, vec!["jake@example.com".to_owned()]);
    assert_eq!(mail.from, "no-reply@quill.localhost");
    assert_eq!(mail.subject, "Welcome to Quill");
    assert!(mail.body.contains("Hello jake,"), "{:?}", mail.body);
    assert!(
        mail.body.contains("your Quill account is ready"),
        "{:?}",
        mail.body
    );
    tokio::time::sleep(SETTLE).await;
    assert_eq!(gw.smtp.mails().len(), 1, "one mail in all");
}

#[tokio::test]
async fn a_follow_notifies_the_followee_once_and_mails_nobody() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;

    gw.follow(&jane, "jake").await;
    // Following again changes nothing, so it announces nothing.
    gw.follow(&jane, "jake").await;

    let list = wait_for_kind(&gw, &jake, "new_follower").await;
    let followed = of_kind(&list, "new_follower")[0];
    assert_eq!(followed["title"], "jane followed you");
    assert_eq!(
        followed["body"],
        "jane will see your new articles in their feed."
    );
    assert_eq!(followed["actorUsername"], "jane");
    assert_eq!(followed["articleSlug"], Value::Null);
    assert_eq!(followed["read"], false);
    wait_for_kind(&gw, &jane, "welcome").await;
    gw.smtp.wait_for("jake@example.com", 1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        kinds(&gw.notifications(&jake).await),
        ["new_follower", "welcome"]
    );
    assert_eq!(kinds(&gw.notifications(&jane).await), ["welcome"]);
    assert_eq!(
        gw.smtp.mails_to("jake@example.com").len(),
        1,
        "welcome only"
    );
}

#[tokio::test]
async fn a_comment_notifies_and_mails_the_author_but_not_on_their_own_article() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let slug = slug_of(&gw.article(&jake, "Dragons", &[]).await);

    gw.comment(&jake, &slug, "Adding a note").await;
    gw.comment(&jane, &slug, "Great read!\nThanks.").await;

    let list = wait_for_kind(&gw, &jake, "comment").await;
    let comment = of_kind(&list, "comment")[0];
    assert_eq!(comment["title"], "jane commented on \"Dragons\"");
    assert_eq!(comment["body"], "Great read!\nThanks.");
    assert_eq!(comment["actorUsername"], "jane");
    assert_eq!(comment["articleSlug"], slug);

    // The welcome mail, then the comment mail.
    let mails = gw.smtp.wait_for("jake@example.com", 2).await;
    let mail = mails
        .iter()
        .find(|m| m.subject != "Welcome to Quill")
        .expect("a comment mail");
    assert_eq!(mail.to, vec!["jake@example.com".to_owned()]);
    assert_eq!(mail.subject, "jane commented on \"Dragons\"");
    assert!(mail.body.contains("Hello jake,"), "{:?}", mail.body);
    assert!(
        mail.body
            .contains("jane commented on your article \"Dragons\""),
        "{:?}",
        mail.body
    );
    assert!(
        mail.body.contains("Great read!\nThanks."),
        "{:?}",
        mail.body
    );
    assert!(
        mail.body.contains(&format!("/article/{slug}")),
        "{:?}",
        mail.body
    );

    wait_for_kind(&gw, &jane, "welcome").await;
    gw.smtp.wait_for("jane@example.com", 1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        kinds(&gw.notifications(&jake).await),
        ["comment", "welcome"],
        "nothing for jake's own comment"
    );
    assert_eq!(kinds(&gw.notifications(&jane).await), ["welcome"]);
    assert_eq!(gw.smtp.mails_to("jake@example.com").len(), 2);
    assert_eq!(gw.smtp.mails_to("jane@example.com").len(), 1);
}

#[tokio::test]
async fn a_favorite_notifies_the_author_but_not_their_own() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let slug = slug_of(&gw.article(&jake, "Dragons", &[]).await);

    gw.favorite(&jake, &slug).await;
    gw.favorite(&jane, &slug).await;

    let list = wait_for_kind(&gw, &jake, "favorite").await;
    let favorite = of_kind(&list, "favorite")[0];
    assert_eq!(favorite["title"], "jane favorited \"Dragons\"");
    assert_eq!(favorite["body"], "");
    assert_eq!(favorite["actorUsername"], "jane");
    assert_eq!(favorite["articleSlug"], slug);
    gw.smtp.wait_for("jake@example.com", 1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        kinds(&gw.notifications(&jake).await),
        ["favorite", "welcome"],
        "one favorite: nothing for jake's own"
    );
    assert_eq!(
        gw.smtp.mails_to("jake@example.com").len(),
        1,
        "welcome only"
    );
}

#[tokio::test]
async fn a_new_article_notifies_the_authors_followers_only() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let joe = gw.register("joe").await;
    gw.follow(&jane, "jake").await;

    let slug = slug_of(&gw.article(&jake, "Dragons", &["fantasy"]).await);

    let list = wait_for_kind(&gw, &jane, "new_article").await;
    let published = of_kind(&list, "new_article")[0];
    assert_eq!(published["title"], "jake published \"Dragons\"");
    assert_eq!(published["body"], "About Dragons");
    assert_eq!(published["actorUsername"], "jake");
    assert_eq!(published["articleSlug"], slug);
    // The whole fan-out is one transaction: it is complete by now.
    let joes = wait_for_kind(&gw, &joe, "welcome").await;
    assert_eq!(kinds(&joes), ["welcome"], "joe follows nobody");
    let jakes = wait_until(&gw, &jake, "the follow and a welcome", |l| l.len() >= 2).await;
    assert_eq!(kinds(&jakes), ["new_follower", "welcome"], "not the author");
}

#[tokio::test]
async fn preferences_turn_the_mail_and_the_in_app_channel_off_per_kind() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let slug = slug_of(&gw.article(&jake, "Dragons", &[]).await);
    gw.smtp.wait_for("jake@example.com", 1).await;

    // Comment mail off: the comment still shows in the app.
    gw.set_preference(&jake, "comment", true, false).await;
    gw.comment(&jane, &slug, "First!").await;
    let list = wait_for_kind(&gw, &jake, "comment").await;
    assert_eq!(of_kind(&list, "comment")[0]["body"], "First!");

    // In-app off, mail back on: the comment comes by mail only.
    gw.set_preference(&jake, "comment", false, true).await;
    gw.comment(&jane, &slug, "Second!").await;
    let mails = gw.smtp.wait_for("jake@example.com", 2).await;

    // Mail goes out in the order it was queued, so had the first comment
    // queued one, it would have arrived before the second's.
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["Welcome to Quill", "jane commented on \"Dragons\""]
    );
    assert!(mails[1].body.contains("Second!"), "{:?}", mails[1].body);
    // The second comment's mail was queued in the same transaction as its
    // in-app notification would have been: none exists.
    let list = gw.notifications(&jake).await;
    assert_eq!(kinds(&list), ["comment", "welcome"]);
    assert_eq!(of_kind(&list, "comment")[0]["body"], "First!");
}

#[tokio::test]
async fn a_broker_outage_delays_notifications_and_loses_or_doubles_none() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let gw = TestGateway::start_behind(&proxy).await;
    // Through the proxy, events flow: jake is welcomed (and his address
    // known to the notification service) before the cut.
    let jake = gw.register("jake").await;
    wait_for_kind(&gw, &jake, "welcome").await;

    proxy.cut();
    let jane = gw.register("jane").await;
    let joe = gw.register("joe").await;
    gw.follow(&jane, "jake").await;
    gw.follow(&joe, "jake").await;
    let slug = slug_of(&gw.article(&jake, "Dragons", &[]).await);
    gw.comment(&jane, &slug, "Great read!").await;
    gw.comment(&joe, &slug, "Me too.").await;
    gw.comment(&jake, &slug, "Thanks, both.").await;
    gw.favorite(&joe, &slug).await;

    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        kinds(&gw.notifications(&jake).await),
        ["welcome"],
        "nothing passes the cut"
    );
    assert!(gw.notifications(&jane).await.is_empty());
    assert!(gw.notifications(&joe).await.is_empty());

    proxy.restore();
    let expected = [
        (
            &jake,
            counts(&[
                ("welcome", 1),
                ("new_follower", 2),
                ("comment", 2),
                ("favorite", 1),
            ]),
        ),
        (&jane, counts(&[("welcome", 1), ("new_article", 1)])),
        (&joe, counts(&[("welcome", 1), ("new_article", 1)])),
    ];
    for (user, expected) in &expected {
        let total: usize = expected.values().sum();
        wait_until(&gw, user, &format!("{total} notifications"), |list| {
            list.len() >= total
        })
        .await;
    }
    let comment_mails = |address: &str| {
        gw.smtp
            .mails_to(address)
            .into_iter()
            .filter(|m| m.subject.contains("commented on"))
            .count()
    };
    gw.smtp.wait_for("jane@example.com", 1).await;
    gw.smtp.wait_for("joe@example.com", 1).await;
    gw.smtp.wait_for("jake@example.com", 3).await;

    tokio::time::sleep(SETTLE).await;
    for (user, expected) in &expected {
        let list = gw.notifications(user).await;
        assert_eq!(
            &count_by_kind(&list),
            expected,
            "{}: {list:#?}",
            user.username
        );
    }
    assert_eq!(gw.smtp.mails_to("jake@example.com").len(), 3);
    assert_eq!(comment_mails("jake@example.com"), 2);
    for address in ["jane@example.com", "joe@example.com"] {
        let mails = gw.smtp.mails_to(address);
        assert_eq!(mails.len(), 1, "{address}: {mails:?}");
        assert_eq!(mails[0].subject, "Welcome to Quill");
    }
}

#[tokio::test]
async fn a_poison_message_is_parked_in_the_dead_letter_queue_and_the_queue_flows_on() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    wait_for_kind(&gw, &jake, "welcome").await;
    let topology = gw.notification.config.topology();
    let broker = &gw.auth.broker;

    // Bytes that are no envelope, and an envelope whose payload names no
    // user, both under a key the notification queue binds.
    broker
        .publish_raw("user.followed", b"\xff\xff not protobuf")
        .await;
    broker
        .publish(&new_envelope(
            "test",
            Payload::UserFollowed(UserFollowed {
                follower_id: uuid::Uuid::new_v4().to_string(),
                follower_username: "ghost".into(),
                followee_id: "not-a-uuid".into(),
                followee_username: "jake".into(),
            }),
        ))
        .await;

    let dlq = topology.dead_letter_queue();
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.ready_messages(&dlq).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison messages did not reach {dlq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    gw.follow(&jane, "jake").await;

    let list = wait_for_kind(&gw, &jake, "new_follower").await;
    assert_eq!(
        of_kind(&list, "new_follower")[0]["title"],
        "jane followed you"
    );
    assert_eq!(kinds(&list), ["new_follower", "welcome"]);
    assert_eq!(broker.ready_messages(&dlq).await, 2, "parked once each");
    assert_eq!(broker.ready_messages(&topology.queue).await, 0);
}

/// A page of notifications and its total are read from one snapshot: a
/// notification committed between the two reads must not make the total
/// disagree with the page (`notifications: []` with `notificationsCount: 1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_list_and_its_total_agree_while_notifications_pour_in() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let gw = TestGateway::start_behind(&proxy).await;
    let jake = gw.register("jake").await;
    wait_for_kind(&gw, &jake, "welcome").await;

    // Held back by a cut, the follows arrive in one burst on the restore.
    proxy.cut();
    for n in 0..15 {
        let fan = gw.register(&format!("fan{n}")).await;
        gw.follow(&fan, "jake").await;
    }
    proxy.restore();

    // Every reply is checked by `notifications`: its total is its length.
    let readers =
        (0..4).map(|_| wait_until(&gw, &jake, "16 notifications", |list| list.len() >= 16));
    for list in futures::future::join_all(readers).await {
        assert_eq!(list.len(), 16);
    }
}
