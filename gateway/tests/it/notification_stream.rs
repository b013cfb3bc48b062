//! `GET /api/notifications/stream` does not outlive what authorised it: it
//! ends when the access token expires and when its session is revoked, and
//! it does not hold up the gateway's graceful shutdown.

use crate::support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quill_auth::testing::claims_of;
use reqwest::{Method, StatusCode};
use support::TestGateway;

/// Opens the stream as `token` on the gateway at `base` (`http://host:port`).
async fn open_stream(http: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    let response = http
        .get(format!("{base}/api/notifications/stream"))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// Reads the stream for up to `wait`, skipping whatever it carries (the
/// welcome notification may arrive); true if it ended cleanly by then, false
/// if it is still open.
async fn ends_within(stream: &mut reqwest::Response, wait: Duration) -> bool {
    let read = async { while stream.chunk().await.expect("read stream").is_some() {} };
    tokio::time::timeout(wait, read).await.is_ok()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .try_into()
        .expect("unix time")
}

#[tokio::test]
async fn a_stream_ends_when_its_access_token_expires() {
    let gw = TestGateway::start().await;
    let user = gw.register("ada").await;
    // The same session, re-signed to expire in two seconds.
    let mut claims = claims_of(&user.token);
    let exp = unix_now() + 2;
    claims["exp"] = exp.into();
    let token = gw.auth.sign(&claims);

    let mut stream = open_stream(&gw.http, &gw.url(""), &token).await;
    assert!(
        ends_within(&mut stream, Duration::from_secs(8)).await,
        "the stream outlived its token"
    );
    // Not before `exp` (whole seconds), and shortly after it.
    let ended = unix_now();
    assert!(ended >= exp, "ended at {ended}, before exp {exp}");
    assert!(ended <= exp + 2, "ended at {ended}, long after exp {exp}");

    // A stream opened with a token that lasts stays open meanwhile.
    let mut lasting = open_stream(&gw.http, &gw.url(""), &user.token).await;
    assert!(!ends_within(&mut lasting, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn a_stream_ends_soon_after_its_session_is_logged_out() {
    let gw = TestGateway::start_with(|c| c.stream_recheck = Duration::from_secs(1)).await;
    let user = gw.register("grace").await;
    let other = gw.register("linus").await;
    let mut stream = open_stream(&gw.http, &gw.url(""), &user.token).await;
    let mut others = open_stream(&gw.http, &gw.url(""), &other.token).await;
    // Re-checks that find the session live leave the stream open.
    assert!(!ends_within(&mut stream, Duration::from_millis(2_500)).await);

    let logout = gw
        .call(Method::POST, "/api/users/logout", Some(&user.token), None)
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.body);
    let logged_out = Instant::now();
    assert!(
        ends_within(&mut stream, Duration::from_secs(4)).await,
        "the stream outlived its session"
    );
    let took = logged_out.elapsed();
    assert!(took < Duration::from_secs(3), "ended {took:?} after logout");

    // Only that session's stream ends.
    assert!(!ends_within(&mut others, Duration::from_millis(1_500)).await);
}

#[tokio::test]
async fn an_open_stream_does_not_hold_up_graceful_shutdown() {
    // The services of a test gateway, and a second gateway in front of them
    // whose shutdown this test controls and awaits.
    let gw = TestGateway::start().await;
    let support::OtherGateway {
        base,
        stop,
        task: mut gateway,
    } = gw.another_gateway(|_| {}).await;

    let user = gw.register("barbara").await;
    let mut stream = open_stream(&gw.http, &base, &user.token).await;
    assert!(!ends_within(&mut stream, Duration::from_millis(500)).await);

    let stopping = Instant::now();
    stop.cancel();
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut gateway).await;
    let took = stopping.elapsed();
    if finished.is_err() {
        gateway.abort();
        panic!("graceful shutdown still waiting after {took:?}");
    }
    finished
        .expect("shut down")
        .expect("server task")
        .expect("server result");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert!(
        ends_within(&mut stream, Duration::from_secs(1)).await,
        "the stream is still open after shutdown"
    );
}

/// Asks for a stream and returns its status alone, without waiting for a
/// body that would never end.
async fn stream_status(gw: &TestGateway, token: &str) -> StatusCode {
    gw.http
        .get(gw.url("/api/notifications/stream"))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .expect("stream")
        .status()
}

#[tokio::test]
async fn one_user_cannot_take_every_stream_slot() {
    let gw = TestGateway::start().await;
    let cap = gw.notification.config.streams.per_user;
    let greedy = gw.register("greedy").await;
    let other = gw.register("other").await;
    let mut streams = Vec::new();
    for _ in 0..cap {
        streams.push(open_stream(&gw.http, &gw.url(""), &greedy.token).await);
    }

    assert_eq!(
        stream_status(&gw, &greedy.token).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Everyone else is served as before.
    let list = gw.get("/api/notifications", Some(&other.token)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let _others = open_stream(&gw.http, &gw.url(""), &other.token).await;

    // A stream that ends gives its slot back.
    drop(streams.pop());
    let mut reopened = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let response = gw
            .http
            .get(gw.url("/api/notifications/stream"))
            .header("authorization", format!("Token {}", greedy.token))
            .send()
            .await
            .expect("stream");
        if response.status() == StatusCode::OK {
            reopened = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(reopened.is_some(), "the ended stream's slot was not freed");
}
