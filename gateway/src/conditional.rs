//! Conditional GETs of the JSON answers (articles, lists, comments,
//! profiles, tags, the user): each carries an `ETag`, and a request whose
//! `If-None-Match` names it is answered 304 with no body, so a client
//! polling an unchanged page downloads nothing. `Cache-Control` says what
//! may keep the answer: an answer to a signed-in caller is theirs alone
//! (`favorited`, `following`), so only the browser may store it; any other
//! may be stored anywhere; both are revalidated on every use.
//!
//! Two kinds of tag:
//! - **Strong, from versions** (articles, lists, comments, profiles, tags):
//!   the handler builds the tag from the versions in the service's answer
//!   ([`crate::versions`]) and asks [`IfNoneMatch::answer`], which renders
//!   the JSON only when the client does not hold it already. A compressed
//!   answer's tag gets the encoding as a suffix (`"…-gzip"`), as a strong
//!   tag must differ between byte sequences; the suffix is ignored when
//!   the tag comes back, since every encoding of one answer is the same
//!   JSON.
//! - **Weak, from the bytes** (anything else JSON, such as the user): a
//!   hash of the answer as sent. It is rendered to be hashed; what a 304
//!   saves is the transfer.

use std::convert::Infallible;

use axum::{
    body::Body,
    extract::{FromRequestParts, Request},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

const PRIVATE: HeaderValue = HeaderValue::from_static("private, no-cache");
const SHARED: HeaderValue = HeaderValue::from_static("no-cache");

/// What compression may add to a strong tag, and strips when it comes back.
const ENCODINGS: [&str; 4] = ["gzip", "br", "zstd", "deflate"];

pub async fn validate(request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let personal = request.headers().contains_key(header::AUTHORIZATION);
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(request).await;
    if is_versioned(&response) {
        let (mut parts, body) = response.into_parts();
        mark_cacheable(&mut parts.headers, personal);
        return Response::from_parts(parts, body);
    }
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
    parts.headers.insert(header::ETAG, etag.clone());
    mark_cacheable(&mut parts.headers, personal);
    if if_none_match.is_some_and(|tags| names(&tags, &etag)) {
        // The 200's headers (validators, caching, CORS), without a body.
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Outside the compression layer: a compressed answer's strong tag gets
/// the encoding as a suffix.
pub async fn name_encoding(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.status() == StatusCode::OK {
        suffix_encoding(response.headers_mut());
    }
    response
}

/// The request's `If-None-Match`, for a handler that can tell an unchanged
/// answer from the versions it was given, before rendering it.
pub struct IfNoneMatch(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.headers.get(header::IF_NONE_MATCH).cloned()))
    }
}

impl IfNoneMatch {
    /// A 304 if the client holds the answer tagged `etag`, else what
    /// `render` builds, tagged (untagged without one).
    pub fn answer<R: IntoResponse>(
        self,
        etag: Option<HeaderValue>,
        render: impl FnOnce() -> Result<R, ApiError>,
    ) -> Result<Response, ApiError> {
        let Some(etag) = etag else {
            return Ok(render()?.into_response());
        };
        if let Some(held) = self.held(&etag) {
            // The tag the client has: with its encoding's suffix, if any.
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, held)]).into_response());
        }
        let mut response = render()?.into_response();
        response.headers_mut().insert(header::ETAG, etag);
        Ok(response)
    }

    /// Which of the client's tags names `etag`: `*`, or a tag equal to it
    /// once `W/` and an encoding's suffix are set aside.
    fn held(&self, etag: &HeaderValue) -> Option<HeaderValue> {
        let tags = self.0.as_ref()?.to_str().ok()?;
        let wanted = etag.to_str().ok()?;
        tags.split(',').map(str::trim).find_map(|tag| {
            if tag == "*" {
                return Some(etag.clone());
            }
            let bare = tag.trim_start_matches("W/");
            (without_encoding(bare) == wanted)
                .then(|| HeaderValue::from_str(tag).ok())
                .flatten()
        })
    }
}

/// `"x-gzip"` is `"x"`; any other tag is itself.
fn without_encoding(tag: &str) -> std::borrow::Cow<'_, str> {
    let inner = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
    let stripped = inner.and_then(|inner| {
        ENCODINGS
            .iter()
            .find_map(|e| inner.strip_suffix(e)?.strip_suffix('-'))
    });
    match stripped {
        Some(inner) => format!("\"{inner}\"").into(),
        None => tag.into(),
    }
}

/// A handler's own tag, on a JSON answer or a 304, with caching left to us.
fn is_versioned(response: &Response) -> bool {
    let headers = response.headers();
    let json = content_type(headers).is_some_and(|t| t.starts_with("application/json"));
    headers.contains_key(header::ETAG)
        && !headers.contains_key(header::CACHE_CONTROL)
        && match response.status() {
            StatusCode::OK => json,
            StatusCode::NOT_MODIFIED => true,
            _ => false,
        }
}

/// A compressed answer's strong tag names that encoding's bytes.
fn suffix_encoding(headers: &mut HeaderMap) {
    let Some(encoding) = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|e| e.to_str().ok())
        .filter(|e| ENCODINGS.contains(e))
    else {
        return;
    };
    let Some(tagged) = headers
        .get(header::ETAG)
        .and_then(|t| t.to_str().ok())
        .and_then(|t| t.strip_prefix('"')?.strip_suffix('"'))
        .and_then(|inner| HeaderValue::from_str(&format!("\"{inner}-{encoding}\"")).ok())
    else {
        return;
    };
    headers.insert(header::ETAG, tagged);
}

fn mark_cacheable(headers: &mut HeaderMap, personal: bool) {
    headers.insert(
        header::CACHE_CONTROL,
        if personal { PRIVATE } else { SHARED },
    );
    headers.append(header::VARY, HeaderValue::from_static("authorization"));
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

    #[test]
    fn a_strong_tag_names_its_encoding_and_is_held_in_any() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        suffix_encoding(&mut headers);
        assert_eq!(headers[header::ETAG], "\"abc-br\"");

        let etag = HeaderValue::from_static("\"abc\"");
        let held =
            |sent: &'static str| IfNoneMatch(Some(HeaderValue::from_static(sent))).held(&etag);
        assert_eq!(held("\"x\", \"abc-gzip\"").unwrap(), "\"abc-gzip\"");
        assert_eq!(held("\"abc\"").unwrap(), "\"abc\"");
        assert_eq!(held("W/\"abc-zstd\"").unwrap(), "W/\"abc-zstd\"");
        assert_eq!(held("*").unwrap(), "\"abc\"");
        for other in ["\"abc-lzma\"", "\"ab\"", "\"abc-\"", "abc"] {
            assert_eq!(held(other), None, "{other}");
        }
        assert_eq!(IfNoneMatch(None).held(&etag), None);
    }
}
