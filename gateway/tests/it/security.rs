//! Every service defends itself: what the gateway enforces holds as well
//! when a caller goes straight to a gRPC port, as any pod in the cluster can.

use crate::support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use quill_platform::{
    grpc::ServiceChannel,
    service_identity::{Service, ServiceCredentials, ServiceSecret},
    testing,
};
use quill_proto::{
    auth::v1 as auth_pb,
    content::v1::{self as content_pb, content_service_client::ContentServiceClient},
    notification::v1 as notification_pb,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{TestGateway, User, errors_for, with_token};
use tonic::{Code, transport::Channel};

fn new_article(title: &str) -> content_pb::CreateArticleRequest {
    content_pb::CreateArticleRequest {
        title: title.into(),
        description: "d".into(),
        body: "b".into(),
        tags: vec![],
    }
}

/// What each service's own port says to `token`.
async fn codes_on_every_port(gw: &TestGateway, token: &str) -> [Code; 3] {
    let auth = gw
        .auth
        .client()
        .get_current_user(with_token(auth_pb::GetCurrentUserRequest {}, token))
        .await;
    let content = gw
        .content
        .client()
        .create_article(with_token(new_article("After the end"), token))
        .await;
    let notification = gw
        .notification
        .client()
        .list_notifications(with_token(
            notification_pb::ListNotificationsRequest::default(),
            token,
        ))
        .await;
    [
        auth.map_or_else(|s| s.code(), |_| Code::Ok),
        content.map_or_else(|s| s.code(), |_| Code::Ok),
        notification.map_or_else(|s| s.code(), |_| Code::Ok),
    ]
}

const REFUSED: [Code; 3] = [Code::Unauthenticated; 3];

#[tokio::test]
async fn every_port_refuses_the_token_of_an_ended_session() {
    let gw = TestGateway::start().await;
    let admin = gw.admin("warden").await;

    let out = gw.register("logged-out").await;
    assert_eq!(codes_on_every_port(&gw, &out.token).await, [Code::Ok; 3]);
    let logout = gw
        .call(Method::POST, "/api/users/logout", Some(&out.token), None)
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);

    let everywhere = gw.register("everywhere").await;
    gw.call(
        Method::POST,
        "/api/users/logout-all",
        Some(&everywhere.token),
        None,
    )
    .await;

    let banned = gw.register("banned").await;
    let ban = gw
        .call(
            Method::POST,
            "/api/admin/users/banned/ban",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(ban.status, StatusCode::OK, "{}", ban.body);

    // A password change ends the user's other sessions.
    let changer = gw.register("changer").await;
    let other_session = token_of(&gw.login(&changer).await);
    let change = gw
        .call(
            Method::PUT,
            "/api/user",
            Some(&changer.token),
            Some(json!({"user": {"password": "a brand new password"}})),
        )
        .await;
    assert_eq!(change.status, StatusCode::OK, "{}", change.body);

    // Presenting a rotated refresh token revokes its whole session.
    let reuser = gw.register("reuser").await;
    let refresh = |token: &str| gw.post("/api/users/refresh", None, json!({"refreshToken": token}));
    let rotated = refresh(&reuser.refresh_token).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let fresh_access = token_of(&rotated);
    assert_eq!(
        refresh(&reuser.refresh_token).await.status,
        StatusCode::UNAUTHORIZED
    );

    for (why, token) in [
        ("logout", &out.token),
        ("logout everywhere", &everywhere.token),
        ("ban", &banned.token),
        ("password change", &other_session),
        ("refresh-token reuse", &fresh_access),
    ] {
        assert_eq!(
            codes_on_every_port(&gw, token).await,
            REFUSED,
            "after {why}"
        );
        let rest = gw.get("/api/user", Some(token)).await;
        assert_eq!(rest.status, StatusCode::UNAUTHORIZED, "REST after {why}");
    }
}

fn token_of(response: &support::Response) -> String {
    response.body["user"]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[tokio::test]
async fn a_revocation_outlives_a_redis_that_forgot_everything() {
    let gw = TestGateway::start().await;
    let user = gw.register("forgotten").await;
    gw.call(Method::POST, "/api/users/logout", Some(&user.token), None)
        .await;

    // Redis keeps nothing on disk: a restart loses every key. The source of
    // truth is auth's database, so the session stays ended.
    gw.auth.redis.forget("").await;

    assert_eq!(codes_on_every_port(&gw, &user.token).await, REFUSED);
    let rest = gw.get("/api/user", Some(&user.token)).await;
    assert_eq!(rest.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_live_subscribe_stream_ends_with_its_session() {
    let gw = TestGateway::setup()
        .notification(|c| c.stream_recheck = Duration::from_secs(1))
        .start()
        .await;
    let user = gw.register("listener").await;
    let mut stream = subscribe(&gw, &user.token).await;
    gw.call(Method::POST, "/api/users/logout", Some(&user.token), None)
        .await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), until_end(&mut stream))
        .await
        .expect("the stream ends after logout");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_live_subscribe_stream_ends_when_its_token_expires() {
    let gw = TestGateway::setup()
        .auth(|c| c.access_token_ttl = Duration::from_secs(2))
        .start()
        .await;
    let user = gw.register("short-lived").await;
    let mut stream = subscribe(&gw, &user.access_token).await;
    tokio::time::timeout(Duration::from_secs(6), until_end(&mut stream))
        .await
        .expect("the stream ends at the token's expiry");
}

/// A live `Subscribe` stream straight from the notification service's port.
async fn subscribe(
    gw: &TestGateway,
    token: &str,
) -> tonic::Streaming<notification_pb::Notification> {
    gw.notification
        .client()
        .subscribe(with_token(
            notification_pb::SubscribeRequest::default(),
            token,
        ))
        .await
        .expect("subscribed")
        .into_inner()
}

/// Reads (the welcome notification...) until the stream ends.
async fn until_end(stream: &mut tonic::Streaming<notification_pb::Notification>) {
    while let Some(Ok(_)) = stream.next().await {}
}

async fn set_role(gw: &TestGateway, admin: &User, username: &str, role: &str) {
    let response = gw
        .call(
            Method::PUT,
            &format!("/api/admin/users/{username}/role"),
            Some(&admin.token),
            Some(json!({"role": role})),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
}

#[tokio::test]
async fn a_role_change_takes_effect_on_the_next_request_everywhere() {
    let gw = TestGateway::start().await;
    let head = gw.admin("head").await;
    let deputy = gw.admin("deputy").await;
    let writer = gw.register("writer").await;
    let first = gw.article(&writer, "First", &[]).await;
    let second = gw.article(&writer, "Second", &[]).await;
    // The deputy's token is used (and its session state cached) before the
    // demotion, as a real client's would be.
    assert_eq!(
        gw.get("/api/user", Some(&deputy.token)).await.status,
        StatusCode::OK
    );

    set_role(&gw, &head, "deputy", "creator").await;
    set_role(&gw, &head, "writer", "viewer").await;

    let slug = |a: &serde_json::Value| a["slug"].as_str().expect("slug").to_owned();
    let via_rest = gw
        .call(
            Method::DELETE,
            &format!("/api/articles/{}", slug(&first)),
            Some(&deputy.token),
            None,
        )
        .await;
    assert_eq!(via_rest.status, StatusCode::FORBIDDEN, "{}", via_rest.body);
    let via_grpc = gw
        .content
        .client()
        .delete_article(with_token(
            content_pb::DeleteArticleRequest {
                slug: slug(&second),
            },
            &deputy.token,
        ))
        .await
        .expect_err("a demoted admin may not moderate");
    assert_eq!(via_grpc.code(), Code::PermissionDenied);

    let publish = gw
        .post(
            "/api/articles",
            Some(&writer.token),
            json!({"article": {"title": "Viewer", "description": "d", "body": "b"}}),
        )
        .await;
    assert_eq!(publish.status, StatusCode::FORBIDDEN, "{}", publish.body);
    let publish = gw
        .content
        .client()
        .create_article(with_token(new_article("Viewer too"), &writer.token))
        .await
        .expect_err("a viewer may not publish");
    assert_eq!(publish.code(), Code::PermissionDenied);

    // And a promotion holds at once too.
    set_role(&gw, &head, "writer", "admin").await;
    let moderated = gw
        .call(
            Method::DELETE,
            &format!("/api/articles/{}", slug(&first)),
            Some(&writer.token),
            None,
        )
        .await;
    assert!(moderated.status.is_success(), "{}", moderated.body);
}

/// Logs in through the gateway as a client at `ip` (the gateway trusts one
/// proxy hop in these tests).
async fn login_from(gw: &TestGateway, ip: &str, email: &str, password: &str) -> StatusCode {
    gw.send(
        gw.http
            .post(gw.url("/api/users/login"))
            .header("x-forwarded-for", ip)
            .json(&json!({"user": {"email": email, "password": password}})),
    )
    .await
    .status
}

#[tokio::test]
async fn strangers_failing_on_purpose_never_lock_the_owner_out() {
    let gw = TestGateway::setup()
        .auth(|c| {
            c.limits.login_failures_per_client.limit = 3;
            c.limits.login_failures_per_account.limit = 5;
            c.limits.login_failures_per_ip.limit = 1_000;
        })
        .gateway(|c| c.trusted_proxies = 1)
        .start()
        .await;
    let owner = gw.register("owner").await;
    // The owner has signed in from their address before.
    assert_eq!(
        login_from(&gw, "10.0.0.1", &owner.email, &owner.password).await,
        StatusCode::OK
    );

    // One stranger spends its own budget...
    for _ in 0..3 {
        let status = login_from(&gw, "10.6.6.6", &owner.email, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login_from(&gw, "10.6.6.6", &owner.email, "guess").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...and a botnet the account's, so new clients are held back...
    for bot in 1..=3 {
        login_from(&gw, &format!("10.7.7.{bot}"), &owner.email, "guess").await;
    }
    assert_eq!(
        login_from(&gw, "10.8.8.8", &owner.email, "guess").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...but the owner's known client gets in with the right password, and
    // a mistyped one first does not count against it beyond its own budget.
    assert_eq!(
        login_from(&gw, "10.0.0.1", &owner.email, "typo").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_from(&gw, "10.0.0.1", &owner.email, &owner.password).await,
        StatusCode::OK
    );
}

fn register_request(name: &str, claimed_ip: &str) -> auth_pb::RegisterRequest {
    auth_pb::RegisterRequest {
        email: format!("{name}@example.com"),
        username: name.into(),
        password: format!("{name}-password"),
        client: Some(auth_pb::ClientInfo {
            user_agent: "claimed agent".into(),
            ip: claimed_ip.into(),
        }),
    }
}

#[tokio::test]
async fn auth_limits_and_client_details_hold_on_its_own_port() {
    let gw = TestGateway::setup()
        .auth(|c| {
            c.limits.register_per_ip.limit = 2;
            c.limits.login_failures_per_client.limit = 2;
        })
        .start()
        .await;
    let mut auth = gw.auth.client();

    // A caller that is not the gateway cannot pick the address its session
    // lists, nor dodge the limit by claiming a new one per call.
    let first = auth
        .register(register_request("direct1", "203.0.113.1"))
        .await
        .expect("registered")
        .into_inner();
    auth.register(register_request("direct2", "203.0.113.2"))
        .await
        .expect("registered");
    let third = auth
        .register(register_request("direct3", "203.0.113.3"))
        .await
        .expect_err("the third registration from one address");
    assert_eq!(third.code(), Code::ResourceExhausted);

    let token = first.tokens.expect("tokens").access_token;
    let sessions = auth
        .list_sessions(with_token(auth_pb::ListSessionsRequest {}, &token))
        .await
        .expect("sessions")
        .into_inner()
        .sessions;
    assert_eq!(sessions[0].ip, "127.0.0.1");
    assert_ne!(sessions[0].user_agent, "claimed agent");

    // Login failures are counted on this door too.
    let login = |claimed_ip: &str| auth_pb::LoginRequest {
        email: "direct1@example.com".into(),
        password: "wrong".into(),
        client: Some(auth_pb::ClientInfo {
            user_agent: String::new(),
            ip: claimed_ip.into(),
        }),
    };
    for ip in ["198.51.100.1", "198.51.100.2"] {
        let status = auth.login(login(ip)).await.expect_err("wrong password");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let limited = auth
        .login(login("198.51.100.3"))
        .await
        .expect_err("limited");
    assert_eq!(limited.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn internal_rpcs_answer_only_the_services_they_serve() {
    let gw = TestGateway::start().await;
    let star = gw.register("star").await;
    let fan = gw.register("fan").await;
    gw.follow(&fan, "star").await;
    let star_id = gw
        .auth
        .client()
        .get_current_user(with_token(auth_pb::GetCurrentUserRequest {}, &star.token))
        .await
        .expect("me")
        .into_inner()
        .id;
    let followers = content_pb::StreamFollowerIdsRequest {
        user_id: star_id.clone(),
        batch_size: 10,
        as_of: None,
    };

    // Anonymous, with a user's token, and as the wrong service: refused.
    let anonymous = gw
        .content
        .client()
        .stream_follower_ids(followers.clone())
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::PermissionDenied);
    let as_user = gw
        .content
        .client()
        .stream_follower_ids(with_token(followers.clone(), &fan.token))
        .await
        .expect_err("a user");
    assert_eq!(as_user.code(), Code::PermissionDenied);
    let as_gateway = ContentServiceClient::new(testing::as_service(
        gw.content.channel.clone(),
        Service::Gateway,
    ))
    .stream_follower_ids(followers.clone())
    .await
    .expect_err("the gateway has no use for it");
    assert_eq!(as_gateway.code(), Code::PermissionDenied);
    // A token signed with another secret proves nothing.
    let forged = ContentServiceClient::new(forged_channel(
        gw.content.channel.clone(),
        Service::Notification,
    ))
    .stream_follower_ids(followers.clone())
    .await
    .expect_err("forged");
    assert_eq!(forged.code(), Code::PermissionDenied);

    // The notification service gets its answer.
    let mut batches = ContentServiceClient::new(testing::as_service(
        gw.content.channel.clone(),
        Service::Notification,
    ))
    .stream_follower_ids(followers)
    .await
    .expect("notification may ask")
    .into_inner();
    let batch = batches.next().await.expect("a batch").expect("ok");
    assert_eq!(batch.user_ids.len(), 1);

    // auth's internal calls likewise.
    let anonymous = gw
        .auth
        .client()
        .get_users_by_ids(auth_pb::GetUsersByIdsRequest {
            ids: vec![star_id.clone()],
        })
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::PermissionDenied);
    let check = gw
        .auth
        .client()
        .check_session(auth_pb::CheckSessionRequest {
            session_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("anonymous");
    assert_eq!(check.code(), Code::PermissionDenied);
    let users = gw
        .auth
        .client_as(Service::Content)
        .get_users_by_ids(auth_pb::GetUsersByIdsRequest { ids: vec![star_id] })
        .await
        .expect("content may ask")
        .into_inner()
        .users;
    assert_eq!(users.len(), 1);
}

fn forged_channel(channel: Channel, service: Service) -> ServiceChannel {
    let other = ServiceSecret::new("an attacker's guess at the secret, long enough").expect("long");
    quill_platform::grpc::client(channel, &ServiceCredentials::new(service, &other))
}

#[tokio::test]
async fn a_stolen_access_token_cannot_change_email_or_password() {
    // Every session counts as old: no recent password login.
    let gw = TestGateway::setup()
        .auth(|c| c.reauth_window = Duration::ZERO)
        .start()
        .await;
    let victim = gw.register("victim").await;
    let put = |user: serde_json::Value| {
        gw.call(
            Method::PUT,
            "/api/user",
            Some(&victim.token),
            Some(json!({"user": user})),
        )
    };

    for change in [
        json!({"email": "thief@example.com"}),
        json!({"password": "thief's password"}),
        json!({"email": "thief@example.com", "currentPassword": "a guess"}),
    ] {
        let refused = put(change.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{change}: {}",
            refused.body
        );
        assert_eq!(errors_for(&refused.body, "currentPassword").len(), 1);
    }
    // The owner still logs in with the old credentials.
    assert_eq!(gw.login(&victim).await.status, StatusCode::OK);

    // Other fields need no proof; the email as it is is not a change; with
    // the current password, email and password change.
    let bio = put(json!({"bio": "still mine", "email": victim.email})).await;
    assert_eq!(bio.status, StatusCode::OK, "{}", bio.body);
    let proven = put(json!({
        "email": "victim2@example.com",
        "password": "a new password",
        "currentPassword": victim.password,
    }))
    .await;
    assert_eq!(proven.status, StatusCode::OK, "{}", proven.body);
    assert_eq!(proven.body["user"]["email"], "victim2@example.com");
}

#[tokio::test]
async fn a_fresh_login_may_change_the_email_without_the_password() {
    // RealWorld clients know nothing of `currentPassword`: right after
    // signing in, their settings page keeps working.
    let gw = TestGateway::start().await;
    let user = gw.register("settled").await;
    let changed = gw
        .call(
            Method::PUT,
            "/api/user",
            Some(&user.token),
            Some(json!({"user": {"email": "settled2@example.com"}})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
}

#[tokio::test]
async fn writes_are_limited_per_user_on_every_door() {
    let gw = TestGateway::setup()
        .content(|c| c.writes_per_user.limit = 3)
        .start()
        .await;
    let busy = gw.register("busy").await;
    let calm = gw.register("calm").await;
    for n in 0..3 {
        gw.article(&busy, &format!("Post {n}"), &[]).await;
    }
    let limited = gw
        .post(
            "/api/articles",
            Some(&busy.token),
            json!({"article": {"title": "One too many", "description": "d", "body": "b"}}),
        )
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.headers.contains_key("retry-after"));
    let direct = gw
        .content
        .client()
        .create_article(with_token(new_article("Around the gateway"), &busy.token))
        .await
        .expect_err("limited on content's port too");
    assert_eq!(direct.code(), Code::ResourceExhausted);
    // Others write on.
    gw.article(&calm, "Calm post", &[]).await;
}

#[tokio::test]
async fn concurrent_guesses_cannot_overrun_the_failure_budget() {
    let gw = TestGateway::setup()
        .auth(|c| c.limits.login_failures_per_client.limit = 3)
        .start()
        .await;
    gw.register("target").await;
    let guesses = (0..12).map(|n| {
        let mut auth = gw.auth.client();
        async move {
            auth.login(auth_pb::LoginRequest {
                email: "target@example.com".into(),
                password: format!("guess {n}"),
                client: None,
            })
            .await
            .expect_err("every guess is wrong")
            .code()
        }
    });
    let codes = futures::future::join_all(guesses).await;
    let checked = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    // Each guess reserves its failure before the (slow) password check, so
    // no more than the budget are ever checked, however many arrive at once.
    assert_eq!(checked, 3, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Unauthenticated | Code::ResourceExhausted))
    );
}

/// The gateway checks a request's session once and vouches for it on the
/// calls it makes, so a service need not check it again; a service takes
/// that word from the gateway alone, and only for the token's own session
/// and user. Anyone else's claim is checked in full.
#[tokio::test]
async fn only_the_gateway_may_vouch_for_a_session() {
    let gw = TestGateway::start().await;
    let out = gw.register("vouched").await;
    let claims: serde_json::Value =
        jsonwebtoken::dangerous::insecure_decode_claims(&out.token).expect("claims");
    let (session, user) = (
        claims["sid"].as_str().unwrap(),
        claims["sub"].as_str().unwrap(),
    );
    let logout = gw
        .call(Method::POST, "/api/users/logout", Some(&out.token), None)
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);

    let vouched = |vouch: String| {
        let mut request = with_token(auth_pb::GetCurrentUserRequest {}, &out.token);
        request.metadata_mut().insert(
            quill_platform::authn::VOUCHED_SESSION,
            vouch.parse().expect("ASCII"),
        );
        request
    };
    let live = format!("{session}:{user}:creator");
    let code = |result: Result<tonic::Response<auth_pb::User>, tonic::Status>| {
        result.map_or_else(|s| s.code(), |_| Code::Ok)
    };

    let anonymous = gw
        .auth
        .client()
        .get_current_user(vouched(live.clone()))
        .await;
    assert_eq!(code(anonymous), Code::Unauthenticated, "no service token");
    let content = gw.auth.client_as(Service::Content);
    let from_content = content
        .clone()
        .get_current_user(vouched(live.clone()))
        .await;
    assert_eq!(code(from_content), Code::Unauthenticated, "not the gateway");
    let forged = auth_pb::auth_service_client::AuthServiceClient::new(forged_channel(
        gw.auth.channel.clone(),
        Service::Gateway,
    ))
    .get_current_user(vouched(live.clone()))
    .await;
    assert_eq!(code(forged), Code::Unauthenticated, "a forged gateway");

    let gateway = gw.auth.client_as(Service::Gateway);
    let other = uuid::Uuid::now_v7();
    for (why, vouch) in [
        ("another session", format!("{other}:{user}:creator")),
        ("another user", format!("{session}:{other}:creator")),
        ("not a vouch", "live".to_owned()),
    ] {
        let answer = gateway.clone().get_current_user(vouched(vouch)).await;
        assert_eq!(code(answer), Code::Unauthenticated, "{why}");
    }
    // The gateway's word for this very session is taken as it is: the
    // service asks no session store.
    let answer = gateway.clone().get_current_user(vouched(live)).await;
    assert_eq!(code(answer), Code::Ok);
}
