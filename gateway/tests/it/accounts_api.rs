//! The gateway's account API through REST, with the real auth service,
//! PostgreSQL and Redis behind it.

use crate::support;

use std::time::Duration;

use quill_auth::testing::{claims_of, unsigned_token};
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{TestGateway, errors_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_current_user_follow_realworld_shapes() {
    let gw = TestGateway::start().await;
    let created = gw
        .post("/api/users", None, json!({"user": {"username": "jake", "email": "jake@jake.jake", "password": "jakejake"}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let user = &created.body["user"];
    assert_eq!(user["username"], "jake");
    assert_eq!(user["email"], "jake@jake.jake");
    assert!(
        user["bio"].is_null() && user.get("bio").is_some(),
        "bio is present as null"
    );
    assert!(
        user["image"].is_null() && user.get("image").is_some(),
        "image is present as null"
    );
    assert_eq!(user["role"], "creator");
    assert!(user["token"].as_str().unwrap().split('.').count() == 3);
    assert!(!user["refreshToken"].as_str().unwrap().is_empty());

    let login = gw
        .post(
            "/api/users/login",
            None,
            json!({"user": {"email": "jake@jake.jake", "password": "jakejake"}}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let token = login.body["user"]["token"].as_str().unwrap().to_owned();

    let me = gw.get("/api/user", Some(&token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["token"], token.as_str());
    assert!(me.body["user"].get("refreshToken").is_none());
    let bearer = gw
        .send(gw.http.get(gw.url("/api/user")).bearer_auth(&token))
        .await;
    assert_eq!(bearer.status, StatusCode::OK, "Bearer is accepted too");

    let updated = gw
        .call(
            Method::PUT,
            "/api/user",
            Some(&token),
            Some(json!({"user": {"email": "jake@new.example", "bio": "I work at statefarm", "image": null}})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["user"]["email"], "jake@new.example");
    assert_eq!(updated.body["user"]["bio"], "I work at statefarm");
    assert_eq!(updated.body["user"]["token"], token.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_email_and_wrong_passwords_use_the_error_format() {
    let gw = TestGateway::start().await;
    let kate = gw.register("kate").await;
    let dup_email = gw
        .post("/api/users", None, json!({"user": {"username": "kate2", "email": "KATE@example.com", "password": "long enough"}}))
        .await;
    assert_eq!(dup_email.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        dup_email.body,
        json!({"errors": {"email": ["has already been taken"]}})
    );
    let dup_name = gw
        .post("/api/users", None, json!({"user": {"username": "kate", "email": "k2@example.com", "password": "long enough"}}))
        .await;
    assert_eq!(
        dup_name.body,
        json!({"errors": {"username": ["has already been taken"]}})
    );

    let wrong = gw
        .post(
            "/api/users/login",
            None,
            json!({"user": {"email": kate.email, "password": "not it at all"}}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.body,
        json!({"errors": {"email or password": ["is invalid"]}})
    );

    let invalid = gw
        .post(
            "/api/users",
            None,
            json!({"user": {"username": "", "email": "nope", "password": "x"}}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        errors_for(&invalid.body, "username"),
        vec!["can't be blank"]
    );
    assert_eq!(errors_for(&invalid.body, "email"), vec!["is invalid"]);
    assert_eq!(errors_for(&invalid.body, "password").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_clear_4xx_and_change_nothing() {
    let gw = TestGateway::start_with(|c| c.max_body_bytes = 64 * 1024).await;
    let raw = |body: &'static str| {
        gw.http
            .post(gw.url("/api/users"))
            .header("content-type", "application/json")
            .body(body)
    };

    let malformed = gw.send(raw("{\"user\": {")).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(errors_for(&malformed.body, "body"), vec!["malformed JSON"]);

    for (what, body) in [
        (
            "wrong type",
            r#"{"user": {"username": 1, "email": "a@b.co", "password": "long enough"}}"#,
        ),
        (
            "unknown field",
            r#"{"user": {"username": "u", "email": "a@b.co", "password": "long enough", "admin": true}}"#,
        ),
        (
            "missing field",
            r#"{"user": {"username": "u", "email": "a@b.co"}}"#,
        ),
        (
            "missing wrapper",
            r#"{"username": "u", "email": "a@b.co", "password": "long enough"}"#,
        ),
        ("not an object", r#"[1, 2, 3]"#),
    ] {
        let response = gw.send(raw(body)).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            response.body
        );
        assert!(!errors_for(&response.body, "body").is_empty(), "{what}");
    }

    let huge = "x".repeat(100 * 1024);
    let oversized = gw
        .send(gw.http.post(gw.url("/api/users")).json(
            &json!({"user": {"username": huge, "email": "a@b.co", "password": "long enough"}}),
        ))
        .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        errors_for(&oversized.body, "body"),
        vec!["request body is too large"]
    );

    let no_type = gw.send(gw.http.post(gw.url("/api/users")).body("{}")).await;
    assert_eq!(no_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Nothing was created by any of it, and the process is still serving.
    let users = gw
        .auth
        .client()
        .get_user_by_username(quill_proto::auth::v1::GetUserByUsernameRequest {
            username: "u".into(),
        })
        .await;
    assert_eq!(users.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(gw.get("/healthz", None).await.status, StatusCode::OK);
    gw.register("still_works").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_401() {
    let gw = TestGateway::start().await;
    let lena = gw.register("lena").await;
    let claims = claims_of(&lena.token);
    let mut expired = claims.clone();
    expired["exp"] = json!(claims["iat"].as_i64().unwrap() - 60);
    let mut escalated = claims.clone();
    escalated["role"] = json!("admin");
    let mut tampered = lena.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let foreign = quill_auth::testing::TestAuth::start().await;

    for (what, token, message) in [
        ("tampered", tampered, "is invalid"),
        ("expired", gw.auth.sign(&expired), "has expired"),
        ("alg none", unsigned_token(&escalated), "is invalid"),
        ("wrong key", foreign.sign(&escalated), "is invalid"),
        ("garbage", "garbage".to_owned(), "is invalid"),
    ] {
        let response = gw.get("/api/user", Some(&token)).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(errors_for(&response.body, "token"), vec![message], "{what}");
        assert_eq!(
            response.headers["www-authenticate"],
            format!(
                r#"Bearer realm="quill", error="invalid_token", error_description="{message}""#
            ),
            "{what}"
        );
    }
    let scheme = gw
        .send(
            gw.http
                .get(gw.url("/api/user"))
                .header("authorization", format!("Basic {}", lena.token)),
        )
        .await;
    assert_eq!(scheme.status, StatusCode::UNAUTHORIZED);
    let missing = gw.get("/api/user", None).await;
    assert_eq!(
        (missing.status, errors_for(&missing.body, "token")),
        (StatusCode::UNAUTHORIZED, vec!["is missing".to_owned()])
    );
    assert_eq!(
        missing.headers["www-authenticate"],
        r#"Bearer realm="quill""#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_reused_token_ends_the_session() {
    let gw = TestGateway::start().await;
    let mona = gw.register("mona").await;
    let rotated = gw
        .post(
            "/api/users/refresh",
            None,
            json!({"refreshToken": mona.refresh_token}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let next_refresh = rotated.body["user"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let next_access = rotated.body["user"]["token"].as_str().unwrap().to_owned();
    assert_ne!(next_refresh, mona.refresh_token);
    assert_eq!(
        gw.get("/api/user", Some(&next_access)).await.status,
        StatusCode::OK
    );

    let replay = gw
        .post(
            "/api/users/refresh",
            None,
            json!({"refreshToken": mona.refresh_token}),
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    // The legitimate holder is logged out too: the session is gone.
    let after = gw
        .post(
            "/api/users/refresh",
            None,
            json!({"refreshToken": next_refresh}),
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        gw.get("/api/user", Some(&next_access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        gw.get("/api/user", Some(&mona.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_session_revocation_refuse_the_token_at_once() {
    let gw = TestGateway::start().await;
    let nina = gw.register("nina").await;
    let second = gw.login(&nina).await.body["user"]["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let sessions = gw.get("/api/user/sessions", Some(&nina.token)).await;
    assert_eq!(sessions.status, StatusCode::OK);
    let list = sessions.body["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let other_id = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(list[0]["createdAt"].as_str().unwrap().ends_with('Z'));

    let revoked = gw
        .call(
            Method::DELETE,
            &format!("/api/user/sessions/{other_id}"),
            Some(&nina.token),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let refused = gw.get("/api/user", Some(&second)).await;
    assert_eq!(
        (refused.status, errors_for(&refused.body, "token")),
        (
            StatusCode::UNAUTHORIZED,
            vec!["session has ended".to_owned()]
        )
    );
    let unknown = gw
        .call(
            Method::DELETE,
            "/api/user/sessions/not-a-session",
            Some(&nina.token),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let logout = gw
        .call(Method::POST, "/api/users/logout", Some(&nina.token), None)
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_eq!(
        gw.get("/api/user", Some(&nina.token)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let a = gw.login(&nina).await.body["user"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = gw.login(&nina).await.body["user"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let all = gw
        .call(Method::POST, "/api/users/logout-all", Some(&a), None)
        .await;
    assert_eq!(
        (all.status, &all.body),
        (StatusCode::OK, &json!({"revokedSessions": 2}))
    );
    assert_eq!(
        gw.get("/api/user", Some(&a)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        gw.get("/api/user", Some(&b)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_refuses_the_token_at_once_and_unban_restores_login() {
    let gw = TestGateway::start().await;
    let olga = gw.register("olga").await;
    let admin = gw.admin("root_admin").await;

    let banned = gw
        .call(
            Method::POST,
            "/api/admin/users/olga/ban",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(banned.status, StatusCode::OK, "{}", banned.body);
    assert_eq!(banned.body["user"]["banned"], true);
    assert_eq!(
        gw.get("/api/user", Some(&olga.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let login = gw.login(&olga).await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);

    let unbanned = gw
        .call(
            Method::DELETE,
            "/api/admin/users/olga/ban",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(unbanned.body["user"]["banned"], false);
    assert_eq!(gw.login(&olga).await.status, StatusCode::OK);
    let missing = gw
        .call(
            Method::POST,
            "/api/admin/users/nobody/ban",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failure_limit_trips_and_recovers() {
    let gw = TestGateway::setup()
        .auth(|c| {
            c.limits.login_failures_per_client.limit = 2;
            c.limits.login_failures_per_client.window = Duration::from_secs(1);
        })
        .start()
        .await;
    let pam = gw.register("pam").await;
    // Successes are not counted: only failures spend the budget.
    for _ in 0..3 {
        assert_eq!(gw.login(&pam).await.status, StatusCode::OK);
    }
    let guess = support::User {
        password: "a wrong guess".into(),
        ..pam
    };
    assert_eq!(gw.login(&guess).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gw.login(&guess).await.status, StatusCode::UNAUTHORIZED);
    let limited = gw.login(&guess).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(errors_for(&limited.body, "rate").len(), 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let pam = support::User {
        password: format!("{}-secret", guess.username),
        ..guess
    };
    assert_eq!(
        gw.login(&pam).await.status,
        StatusCode::OK,
        "the window has passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_rate_limited_per_ip() {
    let gw = TestGateway::setup()
        .auth(|c| c.limits.register_per_ip.limit = 2)
        .start()
        .await;
    gw.register("quinn1").await;
    gw.register("quinn2").await;
    let third = gw
        .post("/api/users", None, json!({"user": {"username": "quinn3", "email": "q3@example.com", "password": "long enough"}}))
        .await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_creator_and_admin_see_different_doors() {
    let gw = TestGateway::start().await;
    let rita = gw.register("rita").await;
    let admin = gw.admin("root_sam").await;

    let forbidden = gw.get("/api/admin/users", Some(&rita.token)).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let page = gw
        .get("/api/admin/users?q=rita&limit=5", Some(&admin.token))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["usersCount"], 1);
    assert_eq!(page.body["users"][0]["role"], "creator");
    let bad_query = gw
        .get("/api/admin/users?limit=-1", Some(&admin.token))
        .await;
    assert_eq!(bad_query.status, StatusCode::UNPROCESSABLE_ENTITY);

    let demoted = gw
        .call(
            Method::PUT,
            "/api/admin/users/rita/role",
            Some(&admin.token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(demoted.body["user"]["role"], "viewer");
    let relogin = gw.login(&rita).await;
    assert_eq!(relogin.body["user"]["role"], "viewer");
    let invalid = gw
        .call(
            Method::PUT,
            "/api/admin/users/rita/role",
            Some(&admin.token),
            Some(json!({"role": "god"})),
        )
        .await;
    assert_eq!(
        (invalid.status, errors_for(&invalid.body, "role").len()),
        (StatusCode::UNPROCESSABLE_ENTITY, 1)
    );
    let by_creator = gw
        .call(
            Method::PUT,
            "/api/admin/users/root_sam/role",
            Some(&rita.token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(by_creator.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_health_and_readiness() {
    let mut gw = TestGateway::start().await;
    let given = gw
        .send(
            gw.http
                .get(gw.url("/healthz"))
                .header("x-request-id", "trace-me-42"),
        )
        .await;
    assert_eq!(given.headers["x-request-id"], "trace-me-42");
    let generated = gw.get("/api/user", None).await;
    let id = generated.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let unknown = gw.get("/api/nothing-here", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let ready = gw.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["checks"]["auth"], "up");
    gw.auth.stop().await;
    let not_ready = gw.get("/readyz", None).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.body["checks"]["auth"], "down");
    assert_eq!(
        gw.get("/healthz", None).await.status,
        StatusCode::OK,
        "alive though not ready"
    );
}
