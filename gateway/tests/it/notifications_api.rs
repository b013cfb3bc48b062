//! Notifications end to end: a REST action in content becomes an event
//! (outbox, relay, RabbitMQ), the notification service turns it into a
//! notification, which the REST API lists and the SSE stream pushes.

use crate::support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestGateway, errors_for};

const WAIT: Duration = Duration::from_secs(15);

/// Polls the caller's list until `kind` shows up; returns the list.
async fn wait_for_kind(gw: &TestGateway, token: &str, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = gw.get("/api/notifications", Some(token)).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        let found = list.body["notifications"]
            .as_array()
            .is_some_and(|all| all.iter().any(|n| n["kind"] == kind));
        if found {
            return list.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} notification: {}",
            list.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads Server-Sent Events until one whose data has `kind`.
async fn next_event_of_kind(stream: &mut reqwest::Response, kind: &str) -> Value {
    let mut buffer = String::new();
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let value: Value = serde_json::from_str(&data).expect("JSON data");
                if value["kind"] == kind {
                    return value;
                }
            }
            let chunk = stream
                .chunk()
                .await
                .expect("read stream")
                .expect("stream open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no {kind} event on the stream"))
}

#[tokio::test]
async fn a_follow_through_rest_is_listed_streamed_and_marked_read() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    // auth's user.registered: a welcome for each.
    wait_for_kind(&gw, &jake.token, "welcome").await;

    let mut stream = gw
        .http
        .get(gw.url("/api/notifications/stream"))
        .header("authorization", format!("Token {}", jake.token))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );

    let followed = gw
        .call(
            Method::POST,
            "/api/profiles/jake/follow",
            Some(&jane.token),
            None,
        )
        .await;
    assert_eq!(followed.status, StatusCode::OK, "{}", followed.body);

    let pushed = next_event_of_kind(&mut stream, "new_follower").await;
    assert_eq!(pushed["title"], "jane followed you");
    assert_eq!(pushed["actorUsername"], "jane");
    assert_eq!(pushed["articleSlug"], Value::Null);
    assert_eq!(pushed["read"], false);

    let list = wait_for_kind(&gw, &jake.token, "new_follower").await;
    assert_eq!(list["notificationsCount"], 2);
    assert_eq!(list["notifications"][0], pushed, "newest first, as pushed");
    assert_eq!(list["notifications"][1]["kind"], "welcome");

    let unread = gw
        .get("/api/notifications/unread-count", Some(&jake.token))
        .await;
    assert_eq!(unread.body, json!({ "count": 2 }));

    let id = pushed["id"].as_str().unwrap();
    let path = format!("/api/notifications/{id}/read");
    let not_hers = gw.call(Method::POST, &path, Some(&jane.token), None).await;
    assert_eq!(not_hers.status, StatusCode::NOT_FOUND);
    let read = gw.call(Method::POST, &path, Some(&jake.token), None).await;
    assert_eq!(read.status, StatusCode::NO_CONTENT);
    let unread_only = gw
        .get("/api/notifications?unread=true&limit=10", Some(&jake.token))
        .await;
    assert_eq!(unread_only.body["notificationsCount"], 1);
    assert_eq!(unread_only.body["notifications"][0]["kind"], "welcome");

    let all = gw
        .call(
            Method::POST,
            "/api/notifications/read-all",
            Some(&jake.token),
            None,
        )
        .await;
    assert_eq!(all.body, json!({ "marked": 1 }));

    let anonymous = gw.get("/api/notifications", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn preferences_are_read_and_changed_through_rest() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;

    let defaults = gw
        .get("/api/notifications/preferences", Some(&jake.token))
        .await;
    assert_eq!(defaults.status, StatusCode::OK, "{}", defaults.body);
    assert_eq!(defaults.body["preferences"]["emailEnabled"], true);
    assert_eq!(
        defaults.body["preferences"]["kinds"][2],
        json!({ "kind": "comment", "inApp": true, "email": true })
    );

    let updated = gw
        .call(
            Method::PUT,
            "/api/notifications/preferences",
            Some(&jake.token),
            Some(json!({ "preferences": {
                "emailEnabled": false,
                "kinds": [{ "kind": "comment", "inApp": true, "email": false }],
            }})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["preferences"]["emailEnabled"], false);
    assert_eq!(
        updated.body["preferences"]["kinds"][2],
        json!({ "kind": "comment", "inApp": true, "email": false })
    );

    let unknown = gw
        .call(
            Method::PUT,
            "/api/notifications/preferences",
            Some(&jake.token),
            Some(json!({ "preferences": {
                "kinds": [{ "kind": "spam", "inApp": true, "email": true }],
            }})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !errors_for(&unknown.body, "kinds").is_empty(),
        "{}",
        unknown.body
    );
}

/// Every event (id, data) the stream carries within `wait`.
async fn events_within(stream: &mut reqwest::Response, wait: Duration) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = stream.chunk().await.expect("read stream") {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let field = |name: &str| -> String {
                    event
                        .lines()
                        .filter_map(|line| line.strip_prefix(name))
                        .map(str::trim_start)
                        .collect()
                };
                let data = field("data:");
                if !data.is_empty() {
                    events.push((field("id:"), serde_json::from_str(&data).expect("JSON")));
                }
            }
        }
    };
    let _ = tokio::time::timeout(wait, read).await;
    events
}

/// Polls until `user` has `n` notifications; their ids, oldest first.
async fn wait_for_count(gw: &TestGateway, user: &support::User, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = gw.notifications(user).await;
        if all.len() >= n {
            assert_eq!(all.len(), n, "{all:?}");
            return all
                .iter()
                .rev()
                .map(|n| n["id"].as_str().expect("id").to_owned())
                .collect();
        }
        assert!(tokio::time::Instant::now() < deadline, "{all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn open(gw: &TestGateway, token: &str, last_event_id: Option<&str>) -> reqwest::RequestBuilder {
    let request = gw
        .http
        .get(gw.url("/api/notifications/stream"))
        .header("authorization", format!("Token {token}"));
    match last_event_id {
        Some(id) => request.header("last-event-id", id),
        None => request,
    }
}

#[tokio::test]
async fn a_reconnecting_event_source_gets_what_it_missed_once_in_order_then_live() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let article = gw.article(&jake, "Dragons", &[]).await;
    let slug = article["slug"].as_str().expect("slug").to_owned();
    wait_for_count(&gw, &jake, 1).await; // the welcome

    // Connected: the follow arrives live.
    let mut stream = open(&gw, &jake.token, None).send().await.expect("stream");
    gw.follow(&jane, "jake").await;
    let live = next_event_of_kind(&mut stream, "new_follower").await;
    let last_seen = live["id"].as_str().expect("id").to_owned();
    drop(stream);

    // Away: three comments, each notified before the next is posted (the
    // list and the stream both follow commit order).
    for (notified, body) in (3..).zip(["one", "two", "three"]) {
        gw.comment(&jane, &slug, body).await;
        wait_for_count(&gw, &jake, notified).await;
    }
    let ids = wait_for_count(&gw, &jake, 5).await;

    // Back, with the id of the last event received.
    let mut resumed = open(&gw, &jake.token, Some(&last_seen))
        .send()
        .await
        .expect("stream");
    assert_eq!(resumed.status(), StatusCode::OK);
    let missed = events_within(&mut resumed, Duration::from_millis(1_500)).await;
    let missed_ids: Vec<&str> = missed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        missed_ids,
        ids[2..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        missed.iter().all(|(_, n)| n["kind"] == "comment"),
        "{missed:?}"
    );

    // Then the live stream goes on, nothing sent twice.
    gw.favorite(&jane, &slug).await;
    let after = events_within(&mut resumed, Duration::from_secs(3)).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].1["kind"], "favorite");

    // An id it cannot resume from (forged, someone else's) streams from
    // now: `EventSource` would give up for good on anything but a 200. Its
    // opening event replaces the id with one it can resume from.
    let janes = gw.notifications(&jane).await;
    let someone_elses = janes[0]["id"].as_str().expect("id").to_owned();
    for unusable in ["not-an-id", someone_elses.as_str()] {
        let mut live = open(&gw, &jake.token, Some(unusable))
            .send()
            .await
            .expect("stream");
        assert_eq!(live.status(), StatusCode::OK);
        let opening = first_event(&mut live).await;
        let position = field(&opening, "id");
        assert!(position.is_some_and(|id| id != unusable), "{opening:?}");
        assert!(
            events_within(&mut live, Duration::from_millis(500))
                .await
                .is_empty()
        );
    }
}

/// The first event of the stream that is not a keep-alive, as sent.
async fn first_event(stream: &mut reqwest::Response) -> String {
    let mut buffer = String::new();
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if event
                    .lines()
                    .any(|line| !line.is_empty() && !line.starts_with(':'))
                {
                    return event;
                }
            }
            let chunk = stream
                .chunk()
                .await
                .expect("read stream")
                .expect("stream open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an event on the stream")
}

/// The value of `field` (`"id"`, `"event"`, `"data"`) in one raw event.
fn field(event: &str, name: &str) -> Option<String> {
    event
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|value| value.trim_start().to_owned())
}

/// A stream that ends before its first notification still leaves the
/// client a place to resume from: it opens with an event that carries only
/// an id (`EventSource` sets `lastEventId` and dispatches nothing), and
/// resuming from it sends what was created since, once.
#[tokio::test]
async fn a_stream_ended_before_its_first_notification_resumes_from_its_opening_id() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    wait_for_count(&gw, &jake, 1).await; // the welcome, before the stream

    let mut stream = open(&gw, &jake.token, None).send().await.expect("stream");
    let opening = first_event(&mut stream).await;
    drop(stream);
    assert_eq!(
        field(&opening, "event").as_deref(),
        Some("position"),
        "{opening:?}"
    );
    assert_eq!(field(&opening, "data"), None, "{opening:?}");
    let position = field(&opening, "id").expect("an id");

    gw.follow(&jane, "jake").await;
    let ids = wait_for_count(&gw, &jake, 2).await;

    let mut resumed = open(&gw, &jake.token, Some(&position))
        .send()
        .await
        .expect("stream");
    let sent = events_within(&mut resumed, Duration::from_millis(1_500)).await;
    let sent_ids: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(sent_ids, [ids[1].as_str()], "{sent:?}");
    assert_eq!(sent[0].1["kind"], "new_follower");
}
