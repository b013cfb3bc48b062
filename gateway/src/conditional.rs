//! Conditional GETs of the JSON answers (articles, lists, comments,
//! profiles, tags, the user): each carries an `ETag`, and a request whose
//! `If-None-Match` names it is answered 304 with no body, so a client
//! polling an unchanged page downloads nothing. `Cache-Control` says what
//! may keep the answer: an answer to a signed-in caller is theirs alone
//! (`favorited`, `following`), so only the browser may store it; any other
//! may be stored anywhere; both are revalidated on every use.
//!
//! The tag is a hash of the JSON as rendered, so it changes exactly when
//! the answer does, viewer flags included, and is the same on every
//! replica. It is weak (`W/`): compression sends the same JSON as several
//! byte sequences, which a strong tag would have to tell apart. The answer
//! is still rendered to be hashed; what a 304 saves is the transfer.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

const PRIVATE: HeaderValue = HeaderValue::from_static("private, no-cache");
const SHARED: HeaderValue = HeaderValue::from_static("no-cache");

pub async fn validate(request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let personal = request.headers().contains_key(header::AUTHORIZATION);
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(request).await;
    if !is_plain_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Bounded: an answer is one gRPC message rendered (16 MiB at most).
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::new(StatusCode::BAD_GATEWAY, "body", "the answer broke off")
            .into_response();
    };
    let Some(etag) = etag_of(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let headers = &mut parts.headers;
    headers.insert(header::ETAG, etag.clone());
    headers.insert(
        header::CACHE_CONTROL,
        if personal { PRIVATE } else { SHARED },
    );
    headers.append(header::VARY, HeaderValue::from_static("authorization"));
    if if_none_match.is_some_and(|tags| names(&tags, &etag)) {
        // The 200's headers (validators, caching, CORS), without a body.
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// A 200 with a JSON body that set no validator or caching of its own.
fn is_plain_json(response: &Response) -> bool {
    response.status() == StatusCode::OK
        && !response.headers().contains_key(header::ETAG)
        && !response.headers().contains_key(header::CACHE_CONTROL)
        && content_type(response.headers()).is_some_and(|t| t.starts_with("application/json"))
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE)?.to_str().ok()
}

/// `W/"` and 32 hex digits of the body's SHA-256 (128 bits: no two
/// answers of one resource will ever share one).
/// `None` cannot happen (hex digits and quotes are a header value), and
/// would only leave the answer untagged.
fn etag_of(body: &[u8]) -> Option<HeaderValue> {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::try_from(format!("W/\"{hex}\"")).ok()
}

/// Whether `If-None-Match` names `etag`: `*`, or one of its tags, compared
/// weakly (RFC 9110, 13.1.2: `W/` aside).
fn names(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(tags) = if_none_match.to_str() else {
        return false;
    };
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let wanted = etag.to_str().map(bare).unwrap_or_default();
    tags.split(',')
        .any(|tag| tag.trim() == "*" || bare(tag) == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_weak_and_follows_the_bytes() {
        let etag = etag_of(br#"{"tags":[]}"#).unwrap();
        let text = etag.to_str().unwrap();
        assert!(
            text.starts_with("W/\"") && text.len() == 2 + 1 + 32 + 1,
            "{text}"
        );
        assert_eq!(Some(etag.clone()), etag_of(br#"{"tags":[]}"#));
        assert_ne!(Some(etag), etag_of(br#"{"tags":["a"]}"#));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let etag = etag_of(b"{}").unwrap();
        let strong = etag.to_str().unwrap().trim_start_matches("W/").to_owned();
        for matching in [etag.to_str().unwrap().to_owned(), strong, "*".into()] {
            let value = HeaderValue::from_str(&format!("\"x\", {matching}")).unwrap();
            assert!(names(&value, &etag), "{matching}");
        }
        assert!(!names(&HeaderValue::from_static("W/\"other\""), &etag));
    }
}
