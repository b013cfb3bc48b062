//! The RealWorld content routes end to end: REST through the gateway to the
//! real auth and content services.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestGateway, errors_for};

fn is_iso_millis(value: &Value) -> bool {
    let text = value.as_str().unwrap_or("");
    text.len() == 24 && text.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

fn slug(article: &Value) -> String {
    article["slug"].as_str().expect("slug").to_owned()
}

#[tokio::test]
async fn an_article_is_published_read_favorited_edited_and_deleted() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;

    let created = gw
        .article(&jake, "How to train your dragon", &["training", "dragons"])
        .await;
    assert_eq!(created["title"], "How to train your dragon");
    assert_eq!(created["tagList"], json!(["dragons", "training"]));
    assert_eq!(created["favorited"], false);
    assert_eq!(created["favoritesCount"], 0);
    assert!(is_iso_millis(&created["createdAt"]), "{created}");
    assert!(is_iso_millis(&created["updatedAt"]), "{created}");
    assert_eq!(
        created["author"],
        json!({ "username": "jake", "bio": null, "image": null, "following": false })
    );
    let path = format!("/api/articles/{}", slug(&created));

    let read = gw.get(&path, None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["article"], created);

    let favorite = format!("{path}/favorite");
    let favorited = gw
        .call(Method::POST, &favorite, Some(&jane.token), None)
        .await;
    assert_eq!(favorited.status, StatusCode::OK, "{:?}", favorited.body);
    assert_eq!(favorited.body["article"]["favorited"], true);
    assert_eq!(favorited.body["article"]["favoritesCount"], 1);

    let favorites = gw
        .get("/api/articles?favorited=jane", Some(&jane.token))
        .await;
    assert_eq!(favorites.body["articlesCount"], 1);
    assert_eq!(favorites.body["articles"][0]["favorited"], true);

    let unfavorited = gw
        .call(Method::DELETE, &favorite, Some(&jane.token), None)
        .await;
    assert_eq!(unfavorited.status, StatusCode::OK, "{:?}", unfavorited.body);
    assert_eq!(unfavorited.body["article"]["favorited"], false);
    assert_eq!(unfavorited.body["article"]["favoritesCount"], 0);

    let updated = gw
        .call(
            Method::PUT,
            &path,
            Some(&jake.token),
            Some(json!({ "article": { "body": "With two hands" } })),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["article"]["body"], "With two hands");
    assert_eq!(
        updated.body["article"]["tagList"],
        json!(["dragons", "training"])
    );

    let deleted = gw
        .call(Method::DELETE, &path, Some(&jake.token), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);
    assert_eq!(gw.get(&path, None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_update_with_a_tag_list_replaces_the_tags() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let path = format!(
        "/api/articles/{}",
        slug(&gw.article(&jake, "Tags", &["a", "b"]).await)
    );

    let updated = gw
        .call(
            Method::PUT,
            &path,
            Some(&jake.token),
            Some(json!({ "article": { "tagList": ["c"] } })),
        )
        .await;

    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["article"]["tagList"], json!(["c"]));
}

#[tokio::test]
async fn articles_are_filtered_by_tag_and_author_newest_first() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    gw.article(&jake, "Dragons", &["dragons"]).await;
    gw.article(&jane, "Cats", &["cats"]).await;

    let all = gw.get("/api/articles", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["articlesCount"], 2);
    assert_eq!(all.body["articles"][0]["title"], "Cats");

    let by_tag = gw.get("/api/articles?tag=dragons", None).await;
    assert_eq!(by_tag.body["articlesCount"], 1);
    assert_eq!(by_tag.body["articles"][0]["title"], "Dragons");

    let by_author = gw.get("/api/articles?author=jane", None).await;
    assert_eq!(by_author.body["articlesCount"], 1);
    assert_eq!(by_author.body["articles"][0]["author"]["username"], "jane");

    let page = gw.get("/api/articles?limit=1&offset=1", None).await;
    assert_eq!(page.body["articlesCount"], 2);
    assert_eq!(page.body["articles"].as_array().map(Vec::len), Some(1));
    assert_eq!(page.body["articles"][0]["title"], "Dragons");
}

#[tokio::test]
async fn a_cursor_walks_to_the_next_page() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    gw.article(&jake, "First", &[]).await;
    gw.article(&jake, "Second", &[]).await;

    let first = gw.get("/api/articles?limit=1", None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["articles"][0]["title"], "Second");
    let cursor = first.body["nextCursor"].as_str().expect("a next cursor");

    let second = gw
        .send(
            gw.http
                .get(gw.url("/api/articles"))
                .query(&[("limit", "1"), ("cursor", cursor)]),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    assert_eq!(second.body["articles"][0]["title"], "First");
}

#[tokio::test]
async fn search_finds_articles_by_their_words() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    gw.article(&jake, "Taming dragons", &[]).await;
    gw.article(&jake, "Baking bread", &[]).await;

    let found = gw.get("/api/articles?q=dragons", None).await;

    assert_eq!(found.status, StatusCode::OK, "{:?}", found.body);
    assert_eq!(found.body["articlesCount"], 1);
    assert_eq!(found.body["articles"][0]["title"], "Taming dragons");
}

#[tokio::test]
async fn bad_paging_is_a_422_naming_the_parameter() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    for (path, field) in [
        ("/api/articles?limit=-1", "limit"),
        ("/api/articles?offset=abc", "offset"),
        ("/api/articles/feed?limit=ten", "limit"),
    ] {
        let response = gw.get(path, Some(&jake.token)).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(
            errors_for(&response.body, field),
            ["must be a non-negative integer"],
            "{path}"
        );
    }
}

#[tokio::test]
async fn writing_needs_a_token_and_a_complete_body() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let article = json!({ "article": { "title": "t", "description": "d", "body": "b" } });

    let anonymous = gw.post("/api/articles", None, article).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let incomplete = gw
        .post(
            "/api/articles",
            Some(&jake.token),
            json!({ "article": { "description": "d", "body": "b" } }),
        )
        .await;
    assert_eq!(incomplete.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !errors_for(&incomplete.body, "body").is_empty(),
        "{:?}",
        incomplete.body
    );

    assert_eq!(
        gw.get("/api/articles/feed", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn only_the_author_may_change_or_delete_an_article() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let path = format!(
        "/api/articles/{}",
        slug(&gw.article(&jake, "Mine", &[]).await)
    );

    let edit = gw
        .call(
            Method::PUT,
            &path,
            Some(&jane.token),
            Some(json!({ "article": { "body": "Yours now" } })),
        )
        .await;
    assert_eq!(edit.status, StatusCode::FORBIDDEN);
    let delete = gw
        .call(Method::DELETE, &path, Some(&jane.token), None)
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);

    assert_eq!(
        gw.get(&path, None).await.body["article"]["body"],
        "All about Mine."
    );
}

#[tokio::test]
async fn an_admin_moderates_articles_and_comments_of_others() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let admin = gw.admin("root").await;
    let path = format!(
        "/api/articles/{}",
        slug(&gw.article(&jake, "Spam", &[]).await)
    );
    let comment = gw
        .post(
            &format!("{path}/comments"),
            Some(&jake.token),
            json!({ "comment": { "body": "more spam" } }),
        )
        .await;
    let comment_path = format!("{path}/comments/{}", comment.body["comment"]["id"]);

    let removed_comment = gw
        .call(Method::DELETE, &comment_path, Some(&admin.token), None)
        .await;
    let removed_article = gw
        .call(Method::DELETE, &path, Some(&admin.token), None)
        .await;

    assert_eq!(removed_comment.status, StatusCode::NO_CONTENT);
    assert_eq!(removed_article.status, StatusCode::NO_CONTENT);
    assert_eq!(gw.get(&path, None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn comments_are_added_listed_and_deleted() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let bystander = gw.register("bystander").await;
    let comments = format!(
        "/api/articles/{}/comments",
        slug(&gw.article(&jake, "Discuss", &[]).await)
    );

    let added = gw
        .post(
            &comments,
            Some(&jane.token),
            json!({ "comment": { "body": "Thank you so much!" } }),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{:?}", added.body);
    let comment = &added.body["comment"];
    assert!(comment["id"].is_i64(), "{comment}");
    assert_eq!(comment["body"], "Thank you so much!");
    assert_eq!(comment["author"]["username"], "jane");
    assert!(is_iso_millis(&comment["createdAt"]), "{comment}");

    let listed = gw.get(&comments, None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["comments"], json!([comment]));

    let one = format!("{comments}/{}", comment["id"]);
    let refused = gw
        .call(Method::DELETE, &one, Some(&bystander.token), None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let deleted = gw.call(Method::DELETE, &one, Some(&jane.token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);

    assert_eq!(gw.get(&comments, None).await.body["comments"], json!([]));
}

#[tokio::test]
async fn comments_page_by_cursor_newest_first() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let path = format!(
        "/api/articles/{}/comments",
        slug(&gw.article(&jake, "Discuss", &[]).await)
    );
    for n in 1..=25 {
        gw.comment(&jake, &path_slug(&path), &format!("comment {n}"))
            .await;
    }

    // RealWorld's answer is unchanged: every comment, no extension field.
    let all = gw.get(&path, None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["comments"].as_array().expect("comments").len(), 25);
    assert_eq!(
        all.body.as_object().expect("object").len(),
        1,
        "{}",
        all.body
    );

    let mut bodies = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("limit", "10".to_owned())];
        query.extend(cursor.clone().map(|c| ("cursor", c)));
        let page = gw.send(gw.http.get(gw.url(&path)).query(&query)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        for comment in page.body["comments"].as_array().expect("comments") {
            bodies.push(comment["body"].as_str().expect("body").to_owned());
        }
        match page.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (1..=25).rev().map(|n| format!("comment {n}")).collect();
    assert_eq!(bodies, expected);

    let offset = gw.get(&format!("{path}?limit=10&offset=20"), None).await;
    assert_eq!(
        offset.body["comments"].as_array().expect("comments").len(),
        5
    );
    let forged = gw.get(&format!("{path}?cursor=forged"), None).await;
    assert_eq!(forged.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        errors_for(&forged.body, "cursor").len(),
        1,
        "{}",
        forged.body
    );
}

/// The slug in an `/api/articles/{slug}/...` path.
fn path_slug(path: &str) -> String {
    path.split('/').nth(3).expect("a slug").to_owned()
}

#[tokio::test]
async fn a_comment_id_that_is_not_a_number_names_no_comment() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let path = format!(
        "/api/articles/{}/comments/abc",
        slug(&gw.article(&jake, "Discuss", &[]).await)
    );

    let response = gw
        .call(Method::DELETE, &path, Some(&jake.token), None)
        .await;

    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(errors_for(&response.body, "comment"), ["not found"]);
}

#[tokio::test]
async fn following_shows_on_the_profile_and_fills_the_feed() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let celeb = gw.register("celeb").await;
    gw.article(&celeb, "Famous words", &[]).await;

    let profile = gw.get("/api/profiles/celeb", None).await;
    assert_eq!(profile.status, StatusCode::OK);
    assert_eq!(
        profile.body,
        json!({ "profile": { "username": "celeb", "bio": null, "image": null, "following": false } })
    );

    // The Postman suite sends a body with follow; it is ignored.
    let followed = gw
        .post(
            "/api/profiles/celeb/follow",
            Some(&jake.token),
            json!({ "user": { "email": "jake@example.com" } }),
        )
        .await;
    assert_eq!(followed.status, StatusCode::OK, "{:?}", followed.body);
    assert_eq!(followed.body["profile"]["following"], true);
    assert_eq!(
        gw.get("/api/profiles/celeb", Some(&jake.token)).await.body["profile"]["following"],
        true
    );

    let feed = gw.get("/api/articles/feed", Some(&jake.token)).await;
    assert_eq!(feed.status, StatusCode::OK, "{:?}", feed.body);
    assert_eq!(feed.body["articlesCount"], 1);
    assert_eq!(feed.body["articles"][0]["title"], "Famous words");
    assert_eq!(feed.body["articles"][0]["author"]["following"], true);

    let unfollowed = gw
        .call(
            Method::DELETE,
            "/api/profiles/celeb/follow",
            Some(&jake.token),
            None,
        )
        .await;
    assert_eq!(unfollowed.status, StatusCode::OK, "{:?}", unfollowed.body);
    assert_eq!(unfollowed.body["profile"]["following"], false);
    assert_eq!(
        gw.get("/api/articles/feed", Some(&jake.token)).await.body["articlesCount"],
        0
    );
}

#[tokio::test]
async fn an_unknown_profile_or_article_is_404() {
    let gw = TestGateway::start().await;

    assert_eq!(
        gw.get("/api/profiles/nobody", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.get("/api/articles/no-such-article", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn tags_in_use_are_listed() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    gw.article(&jake, "Dragons", &["dragons", "training"]).await;

    let response = gw.get("/api/tags", None).await;

    assert_eq!(response.status, StatusCode::OK);
    let mut tags: Vec<String> = serde_json::from_value(response.body["tags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, ["dragons", "training"]);
}
