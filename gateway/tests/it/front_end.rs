//! What stock RealWorld front ends send and expect, request by request as
//! they send it: the spec's status codes, the user object posted back as
//! given, popular tags.

use std::time::Duration;

use quill_auth::testing::claims_of;
use quill_platform::testing::TcpProxy;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{TestGateway, broker_addr, errors_for, with_token};

#[tokio::test]
async fn a_taken_username_or_email_is_a_422_naming_the_field() {
    let gw = TestGateway::start().await;
    gw.register("jake").await;

    let taken_name = gw
        .post(
            "/api/users",
            None,
            json!({"user": {"username": "jake", "email": "other@example.com", "password": "long-enough-1"}}),
        )
        .await;
    assert_eq!(taken_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !errors_for(&taken_name.body, "username").is_empty(),
        "{:?}",
        taken_name.body
    );

    let taken_email = gw
        .post(
            "/api/users",
            None,
            json!({"user": {"username": "other", "email": "jake@example.com", "password": "long-enough-1"}}),
        )
        .await;
    assert_eq!(taken_email.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !errors_for(&taken_email.body, "email").is_empty(),
        "{:?}",
        taken_email.body
    );
}

#[tokio::test]
async fn the_settings_page_posts_back_the_user_it_was_given() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let mut user = gw.get("/api/user", Some(&jake.token)).await.body["user"].clone();
    assert_eq!(user["role"], "creator");
    user["bio"] = json!("I work at statefarm");

    let saved = gw.put_user(&jake.token, user).await;

    assert_eq!(saved.status, StatusCode::OK, "{:?}", saved.body);
    assert_eq!(saved.body["user"]["bio"], "I work at statefarm");
    // A role posted back is not a way to change it.
    let mut promoted = saved.body["user"].clone();
    promoted["role"] = json!("admin");
    let saved = gw.put_user(&jake.token, promoted).await;
    assert_eq!(saved.status, StatusCode::OK, "{:?}", saved.body);
    assert_eq!(saved.body["user"]["role"], "creator");
}

#[tokio::test]
async fn popular_tags_come_most_used_first_and_bounded() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    // "zebra" on every article, "middle" on two, then 105 tags used once.
    gw.article(&jake, "One", &["zebra", "middle", "a-000"])
        .await;
    gw.article(&jake, "Two", &["zebra", "middle"]).await;
    let rare: Vec<String> = (1..105).map(|i| format!("a-{i:03}")).collect();
    let rare: Vec<&str> = rare.iter().map(String::as_str).collect();
    for chunk in rare.chunks(19) {
        let mut tags = vec!["zebra"];
        tags.extend_from_slice(chunk);
        gw.article(&jake, &format!("Three {}", chunk[0]), &tags)
            .await;
    }

    let tags = gw.get("/api/tags", None).await;
    assert_eq!(tags.status, StatusCode::OK);
    let tags: Vec<String> = serde_json::from_value(tags.body["tags"].clone()).unwrap();
    assert_eq!(tags.len(), 100, "the default page is 100 tags: {tags:?}");
    assert_eq!(&tags[..4], ["zebra", "middle", "a-000", "a-001"]);

    let all = gw.get("/api/tags?limit=1000", None).await;
    assert_eq!(all.body["tags"].as_array().unwrap().len(), 107);
    let two = gw.get("/api/tags?limit=2", None).await;
    assert_eq!(two.body["tags"], json!(["zebra", "middle"]));
    let bad = gw.get("/api/tags?limit=lots", None).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!errors_for(&bad.body, "limit").is_empty(), "{:?}", bad.body);
}

/// The official Postman suite posts `["training", "dragons"]` and expects
/// `dragons` first: tag lists are sorted, whatever order they came in.
#[tokio::test]
async fn tag_lists_come_back_sorted_as_the_official_suite_expects() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;

    let article = gw.article(&jake, "Dragons", &["training", "dragons"]).await;

    assert_eq!(article["tagList"], json!(["dragons", "training"]));
}

/// Front ends attach their stored token to every request, including the
/// home page's article list: one that expired, broke, or whose session
/// ended must not empty the page.
#[tokio::test]
async fn a_public_read_with_a_bad_token_is_served_as_anonymous_and_says_why() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let article = gw.article(&jake, "Dragons", &["dragons"]).await;
    let slug = article["slug"].as_str().unwrap();
    gw.favorite(&jake, slug).await;
    let claims = claims_of(&jake.token);
    let mut expired = claims.clone();
    expired["exp"] = json!(claims["iat"].as_i64().unwrap() - 60);
    let ended = gw.register("ended").await;
    let logout = gw
        .post("/api/users/logout", Some(&ended.token), json!({}))
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);

    for (what, token, reason) in [
        ("expired", gw.auth.sign(&expired), "has expired"),
        ("malformed", "garbage".to_owned(), "is invalid"),
        (
            "of an ended session",
            ended.token.clone(),
            "session has ended",
        ),
    ] {
        for path in [
            "/api/articles".to_owned(),
            format!("/api/articles/{slug}"),
            format!("/api/articles/{slug}/comments"),
            "/api/profiles/jake".to_owned(),
        ] {
            let response = gw.get(&path, Some(&token)).await;
            assert_eq!(
                response.status,
                StatusCode::OK,
                "{what} {path}: {:?}",
                response.body
            );
            assert_eq!(
                response.headers["www-authenticate"],
                format!(
                    r#"Bearer realm="quill", error="invalid_token", error_description="{reason}""#
                ),
                "{what} {path}"
            );
        }
        let list = gw.get("/api/articles", Some(&token)).await;
        assert_eq!(list.body["articlesCount"], 1, "{what}");
        assert_eq!(
            list.body["articles"][0]["favorited"], false,
            "served as anonymous"
        );
        // A write still refuses it.
        let write = gw
            .post(
                &format!("/api/articles/{slug}/favorite"),
                Some(&token),
                json!({}),
            )
            .await;
        assert_eq!(write.status, StatusCode::UNAUTHORIZED, "{what}");
    }

    // A good token is used, and nothing is said.
    let signed_in = gw.get("/api/articles", Some(&jake.token)).await;
    assert_eq!(signed_in.body["articles"][0]["favorited"], true);
    assert!(!signed_in.headers.contains_key("www-authenticate"));
    let anonymous = gw.get("/api/articles", None).await;
    assert!(!anonymous.headers.contains_key("www-authenticate"));
}

/// Stock front ends store `token` and never refresh: it must last as long
/// as the session, while an ended session still stops it on the next
/// request. Access tokens here live one second, so a front end holding one
/// would be signed out at once.
#[tokio::test]
async fn the_realworld_token_outlives_access_tokens_and_still_ends_with_its_session() {
    let gw = TestGateway::setup()
        .auth(|c| c.access_token_ttl = Duration::from_secs(1))
        .start()
        .await;
    let admin = gw.admin("admin").await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let claims = claims_of(&jake.token);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        lifetime >= 29 * 86_400,
        "the session's 30 days, not {lifetime} s"
    );
    assert_eq!(claims["aud"], "quill:session");
    let article = gw.article(&jake, "Dragons", &[]).await;
    let slug = article["slug"].as_str().unwrap().to_owned();

    // Past the access token's second and the verifiers' 5 s of leeway, in
    // whole seconds as JWTs count them: 7 s after issue is always past
    // `exp + 5` (6.5 s was not, when issued late in a second).
    tokio::time::sleep(Duration::from_millis(7_200)).await;

    let expired = gw.get("/api/user", Some(&jake.access_token)).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(errors_for(&expired.body, "token"), ["has expired"]);
    // The front end's requests, after the access token's life.
    assert_eq!(
        gw.get("/api/user", Some(&jake.token)).await.status,
        StatusCode::OK
    );
    gw.comment(&jane, &slug, "Still here").await;
    let favorited = gw.favorite(&jane, &slug).await;
    assert_eq!(favorited["favorited"], true);

    // Logout ends it on the next request, on every port.
    let logout = gw
        .post("/api/users/logout", Some(&jake.token), json!({}))
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let after = gw.get("/api/user", Some(&jake.token)).await;
    assert_eq!(errors_for(&after.body, "token"), ["session has ended"]);
    let direct = gw
        .content
        .client()
        .create_article(with_token(
            quill_proto::content::v1::CreateArticleRequest {
                title: "After logout".into(),
                description: "d".into(),
                body: "b".into(),
                tags: vec![],
            },
            &jake.token,
        ))
        .await;
    assert_eq!(direct.unwrap_err().code(), tonic::Code::Unauthenticated);

    // So do a ban and a password change (other sessions end).
    let ban = gw
        .post("/api/admin/users/jane/ban", Some(&admin.token), json!({}))
        .await;
    assert_eq!(ban.status, StatusCode::OK, "{:?}", ban.body);
    assert_eq!(
        gw.get("/api/user", Some(&jane.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let joe = gw.register("joe").await;
    let other_device = gw.login(&joe).await.body["user"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = gw
        .put_user(
            &joe.token,
            json!({"password": "a-new-secret-1", "currentPassword": joe.password}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(
        gw.get("/api/user", Some(&other_device)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        gw.get("/api/user", Some(&joe.token)).await.status,
        StatusCode::OK
    );
}

/// A settings page saves, then opens the profile; an admin bans, then
/// reloads the list. With the broker cut no `user.*` event reaches
/// content, so every read below sees the change only if the write itself
/// brought content's copy up to date.
#[tokio::test]
async fn a_change_in_auth_is_what_the_next_read_through_content_shows() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let gw = TestGateway::start_behind(&proxy).await;
    let admin = gw.admin("admin").await;
    let jake = gw.register("jake").await;
    let article = gw.article(&jake, "Dragons", &[]).await;
    let slug = article["slug"].as_str().unwrap().to_owned();
    gw.comment(&jake, &slug, "First!").await;
    proxy.cut();

    let save = |changes: serde_json::Value| gw.put_user(&jake.token, changes);
    let saved =
        save(json!({"bio": "I work at statefarm", "image": "https://example.com/jake.png"})).await;
    assert_eq!(saved.status, StatusCode::OK, "{:?}", saved.body);
    let profile = gw.get("/api/profiles/jake", Some(&jake.token)).await;
    assert_eq!(profile.body["profile"]["bio"], "I work at statefarm");
    assert_eq!(
        profile.body["profile"]["image"],
        "https://example.com/jake.png"
    );
    let comments = gw
        .get(&format!("/api/articles/{slug}/comments"), None)
        .await;
    assert_eq!(
        comments.body["comments"][0]["author"]["bio"],
        "I work at statefarm"
    );

    let renamed = save(json!({"username": "jacob"})).await;
    assert_eq!(renamed.status, StatusCode::OK, "{:?}", renamed.body);
    // Read by slug and by the old name first: nothing has asked auth for
    // the new name yet.
    let read = gw.get(&format!("/api/articles/{slug}"), None).await;
    assert_eq!(read.body["article"]["author"]["username"], "jacob");
    assert_eq!(
        gw.get("/api/profiles/jake", None).await.status,
        StatusCode::NOT_FOUND
    );
    let by_author = gw.get("/api/articles?author=jacob", None).await;
    assert_eq!(by_author.body["articlesCount"], 1, "{:?}", by_author.body);

    let ban = gw
        .post("/api/admin/users/jacob/ban", Some(&admin.token), json!({}))
        .await;
    assert_eq!(ban.status, StatusCode::OK, "{:?}", ban.body);
    let listed = gw.get("/api/articles", Some(&admin.token)).await;
    assert_eq!(
        listed.body["articlesCount"], 0,
        "a banned author's articles are not listed"
    );
    let unban = gw
        .call(
            Method::DELETE,
            "/api/admin/users/jacob/ban",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(unban.status, StatusCode::OK, "{:?}", unban.body);
    let listed = gw.get("/api/articles", Some(&admin.token)).await;
    assert_eq!(
        listed.body["articlesCount"], 1,
        "listed again after the unban"
    );
}
