//! Request extractors whose failures speak RealWorld's error format.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{
        ConnectInfo, FromRequest, FromRequestParts, OptionalFromRequestParts, Request,
        rejection::JsonRejection,
    },
    http::{StatusCode, header, request::Parts},
};
use quill_platform::{
    account_cache,
    authn::{AuthnError, Caller},
    cache::Found,
};
use serde::de::DeserializeOwned;

use crate::{challenge::IgnoredCredentials, error::ApiError, state::AppState};

/// `axum::Json`, but malformed, mistyped or oversized bodies become
/// `{"errors":{"body":[...]}}` with 400, 422, 413 or 415.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::JsonDataError(e) => format!(
            "invalid request body: {}",
            e.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        ),
        JsonRejection::JsonSyntaxError(_) => "malformed JSON".to_owned(),
        JsonRejection::MissingJsonContentType(_) => {
            "expected Content-Type: application/json".to_owned()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_owned(),
        other => other.body_text(),
    };
    ApiError::new(status, "body", message)
}

/// The caller, authenticated: the token verifies, and its session is live.
/// Calls made for them carry the gateway's word for that, which spares each
/// service a second check; a call to a service's port from anyone else is
/// checked there in full.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The raw JWT, forwarded to the services, which verify it again.
    pub token: String,
    pub caller: Caller,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = required_token(parts)?;
        authenticate(token, state)
            .await
            .map_err(Refused::into_error)
    }
}

/// For public reads: absent credentials are anonymous, and so are
/// credentials that do not hold, said so in `WWW-Authenticate` (see
/// [`crate::challenge`]). Only an unknown session state is an error: the
/// caller may well be signed in, and would see a wrong page.
impl OptionalFromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        let outcome = match token_from(parts) {
            Ok(None) => return Ok(None),
            Ok(Some(token)) => authenticate(token, state).await,
            Err(malformed) => Err(malformed),
        };
        match outcome {
            Ok(user) => Ok(Some(user)),
            Err(Refused::Credentials(reason)) => {
                if let Some(ignored) = parts.extensions.get::<IgnoredCredentials>() {
                    ignored.record(reason);
                }
                Ok(None)
            }
            Err(Refused::SessionStateUnknown) => Err(Refused::SessionStateUnknown.into_error()),
        }
    }
}

/// Why credentials did not authenticate.
enum Refused {
    /// They do not hold, for the reason given.
    Credentials(&'static str),
    /// Neither the session cache nor auth could say whether the session
    /// is live.
    SessionStateUnknown,
}

impl Refused {
    fn into_error(self) -> ApiError {
        match self {
            Self::Credentials(reason) => ApiError::unauthorized(reason),
            Self::SessionStateUnknown => ApiError::unavailable("session store"),
        }
    }
}

/// The request's token, which it must carry.
fn required_token(parts: &Parts) -> Result<String, ApiError> {
    token_from(parts)
        .map_err(Refused::into_error)?
        .ok_or_else(ApiError::token_missing)
}

/// Accepts RealWorld's `Token <jwt>` and the standard `Bearer <jwt>`.
fn token_from(parts: &Parts) -> Result<Option<String>, Refused> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Refused::Credentials("is malformed"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
                && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(Refused::Credentials(
            "must be 'Token <jwt>' or 'Bearer <jwt>'",
        )),
    }
}

async fn authenticate(token: String, state: &AppState) -> Result<AuthUser, Refused> {
    match state.authn.authenticate(&token).await {
        Ok(caller) => Ok(AuthUser { token, caller }),
        Err(e) => Err(refused(e)),
    }
}

fn refused(error: AuthnError) -> Refused {
    match error {
        AuthnError::Expired => Refused::Credentials("has expired"),
        AuthnError::Ended => Refused::Credentials("session has ended"),
        // Unknown session state: refuse rather than admit a revoked token.
        AuthnError::Unavailable => Refused::SessionStateUnknown,
        AuthnError::Invalid | AuthnError::Missing => Refused::Credentials("is invalid"),
    }
}

/// [`AuthUser`], and what the cache of accounts holds for the caller, read
/// in the session check's own round trip to Redis: `GET /api/user` then
/// needs no round trip of its own, nor a call to auth.
pub struct AuthUserAccount {
    pub user: AuthUser,
    /// The values of the caller's [`quill_platform::cache::Cache::keys_for`]
    /// keys in `state.accounts`; `None` when Redis could not be read.
    pub found: Option<Found>,
}

impl FromRequestParts<AppState> for AuthUserAccount {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = required_token(parts)?;
        let (caller, found) = state
            .authn
            .authenticate_along(&token, |claims| {
                let (key, depends_on) = account_cache::entry(claims.sub);
                state.accounts.keys_for(&key, &depends_on)
            })
            .await;
        let caller = caller.map_err(|e| refused(e).into_error())?;
        Ok(Self {
            user: AuthUser { token, caller },
            found,
        })
    }
}

/// The client's address, for rate limits and the session list.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "body", "no peer address")
            })?;
        let forwarded_for = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Ok(Self(client_ip(
            forwarded_for,
            state.config.trusted_proxies,
            peer,
        )))
    }
}

/// The client's address behind `trusted_proxies` proxies, each of which
/// appends the address it sees to `X-Forwarded-For` (repeated headers are
/// one list, in order). The nearest proxy appended the rightmost entry, so
/// the client as the outermost trusted proxy saw it is the entry
/// `trusted_proxies` from the right; anything left of it the client wrote
/// itself. With no trusted proxies, or a list too short or unreadable at
/// that position (a request that bypassed a proxy), the peer address counts.
pub fn client_ip<'a>(
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted_proxies: usize,
    peer: IpAddr,
) -> IpAddr {
    if trusted_proxies == 0 {
        return peer;
    }
    let entries: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|header| header.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(trusted_proxies)
        .and_then(|at| parse_forwarded_address(entries[at]))
        .unwrap_or(peer)
}

/// `203.0.113.7`, `2001:db8::1`, or with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`), as proxies write them.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The `User-Agent` header, bounded.
pub fn user_agent(parts: &axum::http::HeaderMap) -> String {
    parts
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(512)
        .collect()
}

/// `axum::extract::Query` with RealWorld-style 422 errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e| ApiError::validation("query", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(client_ip(["203.0.113.7"], 0, PEER), PEER);
    }

    #[test]
    fn the_entry_the_outermost_trusted_proxy_appended_is_the_client() {
        // The client forged the first two entries; one proxy appended the third.
        let header = ["1.1.1.1, 2.2.2.2, 203.0.113.7"];
        assert_eq!(client_ip(header, 1, PEER), ip("203.0.113.7"));
        // Two proxies: the second appended the first one's address.
        let header = ["1.1.1.1, 203.0.113.7, 10.0.0.2"];
        assert_eq!(client_ip(header, 2, PEER), ip("203.0.113.7"));
    }

    #[test]
    fn repeated_headers_are_one_list() {
        let headers = ["1.1.1.1", "203.0.113.7, 10.0.0.2"];
        assert_eq!(client_ip(headers, 2, PEER), ip("203.0.113.7"));
        assert_eq!(client_ip(headers, 3, PEER), ip("1.1.1.1"));
    }

    #[test]
    fn ports_and_ipv6_are_read() {
        assert_eq!(client_ip(["203.0.113.7:4711"], 1, PEER), ip("203.0.113.7"));
        assert_eq!(
            client_ip(["x, [2001:db8::1]:4711"], 1, PEER),
            ip("2001:db8::1")
        );
        assert_eq!(client_ip(["2001:db8::1"], 1, PEER), ip("2001:db8::1"));
    }

    #[test]
    fn a_short_missing_or_unreadable_list_falls_back_to_the_peer() {
        assert_eq!(client_ip(["203.0.113.7"], 2, PEER), PEER);
        assert_eq!(client_ip([], 1, PEER), PEER);
        assert_eq!(client_ip(["1.1.1.1, unknown"], 1, PEER), PEER);
        assert_eq!(client_ip([""], 1, PEER), PEER);
    }
}
