//! `WWW-Authenticate`: what a client learns about its credentials.
//!
//! A 401 always carries the challenge (RFC 9110 requires it). A public read
//! with credentials that do not hold (expired, malformed, of an ended
//! session) is served as to an anonymous visitor, because front ends
//! attach their stored token to every request and would otherwise show an
//! empty home page; the same challenge on that 200 says the token was
//! ignored and why (RFC 9110 allows it on any response), so a client can
//! sign in again. Only answers a bad token cannot change are served so:
//! optional-auth reads, never writes.

use std::sync::{Arc, OnceLock};

use axum::{
    extract::Request,
    http::{HeaderValue, header},
    middleware::Next,
    response::Response,
};

/// RFC 6750's challenge. Without a description, credentials were missing
/// (no `error`, as §3.1 asks); with one, they were presented and refused.
pub fn challenge(refused_because: Option<&str>) -> HeaderValue {
    let value = match refused_because {
        None => r#"Bearer realm="quill""#.to_owned(),
        Some(reason) => format!(
            r#"Bearer realm="quill", error="invalid_token", error_description="{}""#,
            reason.replace(['"', '\\'], "")
        ),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(r#"Bearer realm="quill""#))
}

/// Set by the optional-auth extractor when it ignored the credentials.
#[derive(Clone, Default)]
pub struct IgnoredCredentials(Arc<OnceLock<&'static str>>);

impl IgnoredCredentials {
    pub fn record(&self, reason: &'static str) {
        let _ = self.0.set(reason);
    }
}

/// Gives every request a place to say its credentials were ignored, and
/// puts that on the answer.
pub async fn announce_ignored_credentials(mut request: Request, next: Next) -> Response {
    let ignored = IgnoredCredentials::default();
    request.extensions_mut().insert(ignored.clone());
    let mut response = next.run(request).await;
    if let Some(reason) = ignored.0.get()
        && !response.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge(Some(reason)));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_token_gets_a_bare_challenge_and_a_refused_one_says_why() {
        assert_eq!(challenge(None), r#"Bearer realm="quill""#);
        assert_eq!(
            challenge(Some("has expired")),
            r#"Bearer realm="quill", error="invalid_token", error_description="has expired""#
        );
        assert_eq!(
            challenge(Some(r#"a "quoted" \ one"#)),
            r#"Bearer realm="quill", error="invalid_token", error_description="a quoted  one""#
        );
    }
}
