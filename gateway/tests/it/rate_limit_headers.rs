//! The IETF rate-limit headers on every rate-limited route, so a client
//! paces itself: `RateLimit-Policy` names each budget the request counted
//! against (quota, window), `RateLimit` what is left and when it resets,
//! on successes and on the 429 alike, relayed from whichever service
//! counted.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Response, TestGateway, with_token};

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.headers))
        .to_str()
        .expect("ASCII")
}

/// `"policy";r=N;t=T` -> (N, T).
fn remaining_and_reset(state: &str, policy: &str) -> (u64, u64) {
    let item = state
        .split(", ")
        .find(|item| item.starts_with(&format!("\"{policy}\";")))
        .unwrap_or_else(|| panic!("{policy} not in {state}"));
    let value = |key: &str| -> u64 {
        item.split(';')
            .find_map(|p| p.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {item}"))
    };
    (value("r="), value("t="))
}

#[tokio::test]
async fn writes_report_their_budget_down_to_the_429() {
    let gw = TestGateway::setup()
        .content(|c| c.writes_per_user.limit = 2)
        .start()
        .await;
    let jake = gw.register("jake").await;
    let write = |title: &'static str| {
        gw.post(
            "/api/articles",
            Some(&jake.token),
            json!({"article": {"title": title, "description": "d", "body": "b"}}),
        )
    };

    let first = write("One").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        header(&first, "ratelimit-policy"),
        "\"writes:user\";q=2;w=60"
    );
    let (remaining, reset) = remaining_and_reset(header(&first, "ratelimit"), "writes:user");
    assert_eq!(remaining, 1);
    assert!((1..=60).contains(&reset), "{reset}");

    let second = write("Two").await;
    assert_eq!(
        remaining_and_reset(header(&second, "ratelimit"), "writes:user").0,
        0
    );

    let refused = write("Three").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        remaining_and_reset(header(&refused, "ratelimit"), "writes:user").0,
        0
    );
    assert!(refused.headers.contains_key("retry-after"));

    // A read counts against nothing and says nothing.
    let read = gw.get("/api/articles", Some(&jake.token)).await;
    assert!(
        !read.headers.contains_key("ratelimit"),
        "{:?}",
        read.headers
    );

    // Straight to content's port (grpcurl), the same budget in the metadata.
    let direct = gw
        .content
        .client()
        .favorite_article(with_token(
            quill_proto::content::v1::FavoriteArticleRequest {
                slug: first.body["article"]["slug"].as_str().expect("slug").into(),
            },
            &jake.token,
        ))
        .await
        .expect_err("the budget is spent");
    assert_eq!(
        direct
            .metadata()
            .get("ratelimit-policy")
            .map(|v| v.to_str().unwrap()),
        Some("\"writes:user\";q=2;w=60")
    );
}

#[tokio::test]
async fn sign_up_and_sign_in_report_the_clients_budget_not_the_accounts() {
    let gw = TestGateway::setup()
        .auth(|c| c.limits.register_per_ip.limit = 5)
        .start()
        .await;
    let registered = gw
        .post(
            "/api/users",
            None,
            json!({"user": {"username": "jake", "email": "jake@example.com", "password": "jake-secret"}}),
        )
        .await;
    assert_eq!(registered.status, StatusCode::CREATED);
    assert_eq!(
        header(&registered, "ratelimit-policy"),
        "\"register:ip\";q=5;w=60"
    );
    assert_eq!(
        remaining_and_reset(header(&registered, "ratelimit"), "register:ip").0,
        4
    );

    let login = |password: &'static str| {
        gw.post(
            "/api/users/login",
            None,
            json!({"user": {"email": "jake@example.com", "password": password}}),
        )
    };
    let failed = login("wrong").await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    let limit = gw.auth.config.limits.login_failures_per_ip.limit;
    let after_failure = remaining_and_reset(header(&failed, "ratelimit"), "login-failures:ip").0;
    assert_eq!(after_failure, u64::from(limit) - 1);

    // A success gives its reservation back; the account's own budgets,
    // which would tell a stranger how close it is to a lock, never show.
    let signed_in = login("jake-secret").await;
    assert_eq!(signed_in.status, StatusCode::OK);
    let policies = header(&signed_in, "ratelimit-policy");
    assert!(!policies.contains("account"), "{policies}");
    assert_eq!(
        remaining_and_reset(header(&signed_in, "ratelimit"), "login-failures:ip").0,
        after_failure
    );
}

#[tokio::test]
async fn uploads_report_the_gateways_own_budget() {
    let gw = TestGateway::start_with(|c| c.uploads.rate_limit.limit = 4).await;
    let jake = gw.register("jake").await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec()),
    );
    let uploaded = gw
        .send(
            gw.http
                .post(gw.url("/api/uploads"))
                .header("authorization", format!("Token {}", jake.token))
                .multipart(form),
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    assert_eq!(header(&uploaded, "ratelimit-policy"), "\"upload\";q=4;w=60");
    assert_eq!(
        remaining_and_reset(header(&uploaded, "ratelimit"), "upload").0,
        3
    );
}
