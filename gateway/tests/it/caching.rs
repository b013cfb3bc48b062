//! Answers compressed as the client asks, and validated: an `ETag` on every
//! JSON answer, a 304 for an unchanged one, `Cache-Control` saying who may
//! keep it.

use std::io::Read;

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::support::TestGateway;

async fn get_encoded(gw: &TestGateway, path: &str, encoding: &str) -> reqwest::Response {
    gw.http
        .get(gw.url(path))
        .header(header::ACCEPT_ENCODING, encoding)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn json_answers_are_compressed_as_the_client_asks() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    for title in ["One", "Two", "Three"] {
        gw.post(
            "/api/articles",
            Some(&jake.token),
            json!({"article": {"title": title, "description": "d".repeat(1000), "body": "b"}}),
        )
        .await;
    }
    let plain: Value = get_encoded(&gw, "/api/articles", "identity")
        .await
        .json()
        .await
        .expect("JSON");

    let gzipped = get_encoded(&gw, "/api/articles", "gzip").await;
    assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
    let vary: Vec<&str> = gzipped
        .headers()
        .get_all(header::VARY)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        vary.iter().any(|v| v.contains("accept-encoding")),
        "{vary:?}"
    );
    let compressed = gzipped.bytes().await.expect("bytes");
    let mut json = String::new();
    flate2::read::GzDecoder::new(compressed.as_ref())
        .read_to_string(&mut json)
        .expect("gzip");
    assert!(
        compressed.len() * 4 < json.len(),
        "{} of {}",
        compressed.len(),
        json.len()
    );
    assert_eq!(serde_json::from_str::<Value>(&json).expect("JSON"), plain);

    for (asked, chosen) in [
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip;q=0.5, br;q=1.0", "br"),
    ] {
        let response = get_encoded(&gw, "/api/articles", asked).await;
        assert_eq!(
            response.headers()[header::CONTENT_ENCODING],
            chosen,
            "{asked}"
        );
    }

    // Small answers are sent as they are.
    let small = get_encoded(&gw, "/api/tags", "gzip").await;
    assert!(!small.headers().contains_key(header::CONTENT_ENCODING));
    // An event stream is never held back to fill a compression block.
    let stream = gw
        .http
        .get(gw.url("/api/notifications/stream"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .header(header::AUTHORIZATION, format!("Token {}", jake.token))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(!stream.headers().contains_key(header::CONTENT_ENCODING));
}

async fn get_if(
    gw: &TestGateway,
    path: &str,
    token: Option<&str>,
    etag: Option<&str>,
) -> reqwest::Response {
    let mut request = gw.http.get(gw.url(path));
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Token {token}"));
    }
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    request.send().await.expect("request")
}

fn etag(response: &reqwest::Response) -> String {
    response.headers()[header::ETAG]
        .to_str()
        .expect("an ETag")
        .to_owned()
}

#[tokio::test]
async fn an_unchanged_answer_is_a_304_and_a_change_a_new_tag() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let jane = gw.register("jane").await;
    let article = gw.article(&jake, "Dragons", &["dragons"]).await;
    let slug = article["slug"].as_str().expect("a slug");
    gw.comment(&jake, slug, "first").await;
    let path = format!("/api/articles/{slug}");

    let first = get_if(&gw, &path, None, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
    let tag = etag(&first);
    assert!(tag.starts_with('"'), "strong, from versions: {tag}");

    let unchanged = get_if(&gw, &path, None, Some(&tag)).await;
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&unchanged), tag);
    assert!(unchanged.bytes().await.expect("bytes").is_empty());
    // From a front end on another origin: the 304 keeps the CORS answer,
    // and the tag is readable.
    let cross_origin = gw
        .http
        .get(gw.url(&path))
        .header(header::ORIGIN, "http://localhost:3000")
        .header(header::IF_NONE_MATCH, &tag)
        .send()
        .await
        .expect("request");
    assert_eq!(cross_origin.status(), StatusCode::NOT_MODIFIED);
    let headers = cross_origin.headers();
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:3000"
    );
    let exposed = headers[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap();
    assert!(exposed.contains("etag"), "{exposed}");

    // A viewer's own answer is theirs: private, and tagged apart from
    // the anonymous one once their flags differ.
    gw.favorite(&jane, slug).await;
    let janes = get_if(&gw, &path, Some(&jane.token), None).await;
    assert_eq!(janes.headers()[header::CACHE_CONTROL], "private, no-cache");
    let changed = get_if(&gw, &path, None, Some(&tag)).await;
    assert_eq!(changed.status(), StatusCode::OK, "favoritesCount changed");
    assert_ne!(etag(&changed), tag);
    assert_ne!(etag(&janes), etag(&changed), "favorited differs");

    for path in [
        "/api/articles".to_owned(),
        format!("/api/articles/{slug}/comments"),
        "/api/profiles/jake".to_owned(),
        "/api/tags".to_owned(),
    ] {
        let answer = get_if(&gw, &path, None, None).await;
        let tag = etag(&answer);
        let again = get_if(&gw, &path, None, Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    // Without versions, the answer's bytes are hashed: a weak tag.
    let user = get_if(&gw, "/api/user", Some(&jake.token), None).await;
    assert!(etag(&user).starts_with("W/\""), "{}", etag(&user));
    let again = get_if(&gw, "/api/user", Some(&jake.token), Some(&etag(&user))).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

/// An article's tag comes from its versions: each encoding's bytes have a
/// tag of their own, any of them is a 304 while the article is unchanged,
/// and an edit of the article or of its author's profile is a new tag.
#[tokio::test]
async fn a_versioned_tag_names_its_encoding_and_follows_every_edit() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;
    let created = gw
        .post(
            "/api/articles",
            Some(&jake.token),
            json!({"article": {"title": "Long", "description": "d", "body": "b".repeat(4000)}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let path = format!(
        "/api/articles/{}",
        created.body["article"]["slug"].as_str().unwrap()
    );
    let get = |encoding: &'static str, tag: Option<String>| {
        let mut request = gw
            .http
            .get(gw.url(&path))
            .header(header::ACCEPT_ENCODING, encoding);
        if let Some(tag) = tag {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        async move { request.send().await.expect("request") }
    };

    let plain = etag(&get("identity", None).await);
    let bare = plain.trim_end_matches('"');
    for encoding in ["gzip", "br", "zstd"] {
        let response = get(encoding, None).await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], encoding);
        let tagged = etag(&response);
        assert_eq!(tagged, format!("{bare}-{encoding}\""));
        // What the client holds comes back as it was sent, with the
        // caching headers a 200 would have had.
        let held = get(encoding, Some(tagged.clone())).await;
        assert_eq!(held.status(), StatusCode::NOT_MODIFIED, "{encoding}");
        assert_eq!(etag(&held), tagged);
        assert_eq!(held.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(!held.headers().contains_key(header::CONTENT_ENCODING));
        assert!(held.bytes().await.expect("bytes").is_empty());
    }
    assert_eq!(
        get("identity", Some(format!("{bare}-gzip\"")))
            .await
            .status(),
        StatusCode::NOT_MODIFIED,
        "the same JSON in another encoding"
    );

    let edited = gw
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&jake.token),
            Some(json!({"article": {"body": "edited"}})),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{:?}", edited.body);
    let after_edit = get("identity", Some(plain.clone())).await;
    assert_eq!(after_edit.status(), StatusCode::OK);
    let after_edit = etag(&after_edit);
    assert_ne!(after_edit, plain);

    // The author's profile reaches content by an event: wait for it.
    let updated = gw
        .put_user(&jake.token, json!({"bio": "I like dragons"}))
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let response = get("identity", Some(after_edit.clone())).await;
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["article"]["author"]["bio"], "I like dragons");
            break;
        }
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bio never changed the tag"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
