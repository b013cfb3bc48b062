//! `GET /api/user` from the gateway's cache of accounts: read in the
//! session check's round trip to Redis, asked of auth once per change, and
//! never older than a change auth has answered, through any gateway.

use std::net::SocketAddr;

use quill_platform::testing::TcpProxy;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::TestGateway;

/// `GetCurrentUser` calls made so far by every gateway of this process (the
/// client-side duration histogram's counts).
fn current_user_calls() -> f64 {
    quill_platform::metrics::get()
        .render()
        .lines()
        .filter(|line| line.starts_with("rpc_client_call_duration_seconds_count"))
        .filter(|line| line.contains("AuthService/GetCurrentUser"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn me(base: &str, gw: &TestGateway, token: &str) -> (StatusCode, Value) {
    let response = gw
        .send(
            gw.http
                .get(format!("{base}/api/user"))
                .header("authorization", format!("Token {token}")),
        )
        .await;
    (response.status, response.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_shows_at_once_and_only_changes_ask_auth() {
    let gw = TestGateway::start().await;
    let other = gw.another_gateway(|_| {}).await;
    let admin = gw.admin("root").await;
    let jake = gw.register("jake").await;
    let here = gw.url("");

    let asked = current_user_calls();
    for base in [&here, &other.base, &here, &other.base] {
        let (status, body) = me(base, &gw, &jake.token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user"]["username"], "jake");
        assert_eq!(body["user"]["token"], jake.token.as_str());
    }
    assert_eq!(
        current_user_calls() - asked,
        1.0,
        "one load for both gateways, then hits"
    );

    // A change through one gateway, read at once through the other.
    let updated = gw
        .call(
            Method::PUT,
            "/api/user",
            Some(&jake.token),
            Some(json!({"user": {"username": "jacob", "bio": "I work at statefarm", "image": "https://example.com/j.png"}})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    let (_, body) = me(&other.base, &gw, &jake.token).await;
    assert_eq!(body["user"]["username"], "jacob");
    assert_eq!(body["user"]["bio"], "I work at statefarm");
    assert_eq!(body["user"]["image"], "https://example.com/j.png");

    // A role an admin grants shows on the next read.
    let promoted = gw
        .call(
            Method::PUT,
            "/api/admin/users/jacob/role",
            Some(&admin.token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(promoted.status, StatusCode::OK, "{}", promoted.body);
    let (_, body) = me(&here, &gw, &jake.token).await;
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(
        current_user_calls() - asked,
        3.0,
        "one load after each change"
    );

    // A ban ends the session before any cached account could answer.
    let banned = gw
        .call(
            Method::POST,
            "/api/admin/users/jacob/ban",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(banned.status, StatusCode::OK, "{}", banned.body);
    for base in [&here, &other.base] {
        let (status, body) = me(base, &gw, &jake.token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_every_read_asks_auth() {
    let gw = TestGateway::start_with(|c| c.account_cache_ttl = std::time::Duration::ZERO).await;
    let jake = gw.register("jake").await;
    let asked = current_user_calls();
    for _ in 0..3 {
        let (status, body) = me(&gw.url(""), &gw, &jake.token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user"]["username"], "jake");
    }
    assert_eq!(current_user_calls() - asked, 3.0);
}

/// The gateway's Redis gone: the session check and the account both come
/// from auth, and a change auth answers meanwhile shows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_account_comes_from_auth() {
    let redis: SocketAddr = quill_platform::testing::redis_url()
        .trim_start_matches("redis://")
        .parse()
        .expect("TEST_REDIS_URL is redis://ip:port");
    let proxy = TcpProxy::start(redis).await;
    let gw = TestGateway::start_with(|c| {
        c.authn.redis_url = format!("redis://{}", proxy.addr()).into();
    })
    .await;
    let jake = gw.register("jake").await;
    let (status, _) = me(&gw.url(""), &gw, &jake.token).await;
    assert_eq!(status, StatusCode::OK, "the entry is cached");

    proxy.cut();
    let asked = current_user_calls();
    let saved = gw
        .put_user(&jake.token, json!({"bio": "Redis is down"}))
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let (status, body) = me(&gw.url(""), &gw, &jake.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["bio"], "Redis is down");
    assert_eq!(current_user_calls() - asked, 1.0);
}
