//! Input that no stored row can hold is the client's mistake, never the
//! server's: a NUL byte (PostgreSQL text refuses it) in any string the API
//! takes, and a validly signed cursor whose time is out of range, answer
//! 422 with RealWorld's error body, or 404 for a path segment.

use crate::support;

use chrono::{DateTime, Datelike};
use quill_content::cursor::{CursorCodec, Position};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use support::{Response, TestGateway};
use uuid::Uuid;

/// A NUL as JSON and as a path segment or query value.
const NUL: &str = "\u{0}";
const NUL_IN_URL: &str = "%00";

fn assert_refused(what: &str, response: &Response, expected: StatusCode) {
    assert_eq!(response.status, expected, "{what}: {}", response.body);
    let errors = response.body["errors"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no errors object in {}", response.body));
    assert!(
        errors
            .values()
            .all(|messages| messages.as_array().is_some_and(|m| !m.is_empty())),
        "{what}: {}",
        response.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_byte_in_any_string_is_a_client_error() {
    let gateway = TestGateway::start().await;
    let jake = gateway.register("jake").await;
    let admin = gateway.admin("boss").await;
    let article = gateway.article(&jake, "Dragons", &["dragons"]).await;
    let slug = article["slug"].as_str().expect("slug").to_owned();
    let nul = |s: &str| format!("a{NUL}{s}");

    let mut body_probes: Vec<(&str, Method, String, Option<&str>, Value)> = vec![
        (
            "register username",
            Method::POST,
            "/api/users".into(),
            None,
            json!({"user": {"username": nul("u"), "email": "n1@example.com", "password": "long enough"}}),
        ),
        (
            "register email",
            Method::POST,
            "/api/users".into(),
            None,
            json!({"user": {"username": "n2", "email": format!("n2{NUL}@example.com"), "password": "long enough"}}),
        ),
        (
            "login email",
            Method::POST,
            "/api/users/login".into(),
            None,
            json!({"user": {"email": format!("jake{NUL}@example.com"), "password": "long enough"}}),
        ),
        (
            "article title",
            Method::POST,
            "/api/articles".into(),
            Some(&jake.token),
            json!({"article": {"title": nul("t"), "description": "d", "body": "b"}}),
        ),
        (
            "article description",
            Method::POST,
            "/api/articles".into(),
            Some(&jake.token),
            json!({"article": {"title": "t", "description": nul("d"), "body": "b"}}),
        ),
        (
            "article body",
            Method::POST,
            "/api/articles".into(),
            Some(&jake.token),
            json!({"article": {"title": "t", "description": "d", "body": nul("b")}}),
        ),
        (
            "article tag",
            Method::POST,
            "/api/articles".into(),
            Some(&jake.token),
            json!({"article": {"title": "t", "description": "d", "body": "b", "tagList": [nul("x")]}}),
        ),
        (
            "updated article body",
            Method::PUT,
            format!("/api/articles/{slug}"),
            Some(&jake.token),
            json!({"article": {"body": nul("b")}}),
        ),
        (
            "comment body",
            Method::POST,
            format!("/api/articles/{slug}/comments"),
            Some(&jake.token),
            json!({"comment": {"body": nul("c")}}),
        ),
    ];
    for field in ["bio", "image", "username", "email"] {
        body_probes.push((
            field,
            Method::PUT,
            "/api/user".into(),
            Some(&jake.token),
            json!({"user": {field: nul("x")}}),
        ));
    }
    for (what, method, path, token, body) in body_probes {
        let response = gateway.call(method, &path, token, Some(body)).await;
        assert_refused(what, &response, StatusCode::UNPROCESSABLE_ENTITY);
    }

    let query_probes = [
        "/api/articles?tag=",
        "/api/articles?author=",
        "/api/articles?favorited=",
        "/api/articles?q=",
        "/api/admin/users?q=",
    ];
    for path in query_probes {
        let response = gateway
            .get(&format!("{path}a{NUL_IN_URL}"), Some(&admin.token))
            .await;
        assert_refused(path, &response, StatusCode::UNPROCESSABLE_ENTITY);
    }

    let bad_slug = format!("dra{NUL_IN_URL}gons");
    let bad_name = format!("ja{NUL_IN_URL}ke");
    let path_probes = [
        (Method::GET, format!("/api/articles/{bad_slug}")),
        (Method::PUT, format!("/api/articles/{bad_slug}")),
        (Method::DELETE, format!("/api/articles/{bad_slug}")),
        (Method::POST, format!("/api/articles/{bad_slug}/favorite")),
        (Method::DELETE, format!("/api/articles/{bad_slug}/favorite")),
        (Method::GET, format!("/api/articles/{bad_slug}/comments")),
        (Method::POST, format!("/api/articles/{bad_slug}/comments")),
        (
            Method::DELETE,
            format!("/api/articles/{bad_slug}/comments/1"),
        ),
        (Method::GET, format!("/api/profiles/{bad_name}")),
        (Method::POST, format!("/api/profiles/{bad_name}/follow")),
        (Method::DELETE, format!("/api/profiles/{bad_name}/follow")),
        (Method::PUT, format!("/api/admin/users/{bad_name}/role")),
        (Method::POST, format!("/api/admin/users/{bad_name}/ban")),
        (Method::DELETE, format!("/api/admin/users/{bad_name}/ban")),
    ];
    for (method, path) in path_probes {
        let body = match method {
            Method::PUT if path.contains("/role") => Some(json!({"role": "viewer"})),
            Method::PUT => Some(json!({"article": {"body": "b"}})),
            Method::POST if path.ends_with("/comments") => Some(json!({"comment": {"body": "c"}})),
            _ => None,
        };
        let response = gateway
            .call(method.clone(), &path, Some(&admin.token), body)
            .await;
        assert_refused(
            &format!("{method} {path}"),
            &response,
            StatusCode::NOT_FOUND,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_cursor_with_an_impossible_time_is_a_client_error() {
    let gateway = TestGateway::start().await;
    let jake = gateway.register("jake").await;
    let codec = CursorCodec::new(
        gateway
            .content
            .config
            .cursor_secret
            .expose_secret()
            .as_bytes(),
    );
    // Within chrono's range, far outside PostgreSQL's.
    let created_at = DateTime::from_timestamp_micros(0)
        .and_then(|t| t.with_year(-100_000))
        .expect("a representable time");
    let cursor = codec.encode(Position {
        created_at,
        id: Uuid::now_v7(),
    });

    for path in ["/api/articles", "/api/articles/feed"] {
        let response = gateway
            .get(&format!("{path}?cursor={cursor}"), Some(&jake.token))
            .await;
        assert_refused(path, &response, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            support::errors_for(&response.body, "cursor")
                .iter()
                .any(|m| !m.is_empty()),
            "{}",
            response.body
        );
    }
}
