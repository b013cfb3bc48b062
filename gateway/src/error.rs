//! The gateway's one error type and its one mapping to HTTP. Every route
//! returns `ApiError`, so a gRPC code means the same status everywhere.

use std::collections::BTreeMap;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;

use crate::challenge::challenge;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    /// RealWorld's `{"errors": {field: [messages]}}`.
    errors: BTreeMap<String, Vec<String>>,
    retry_after_secs: Option<u64>,
    /// `WWW-Authenticate`, on every 401.
    challenge: Option<HeaderValue>,
}

impl ApiError {
    pub fn new(status: StatusCode, field: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: BTreeMap::from([(field.to_owned(), vec![message.into()])]),
            retry_after_secs: None,
            challenge: None,
        }
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, field, message)
    }

    /// Credentials were presented and refused.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            challenge: Some(challenge(Some(&message))),
            ..Self::new(StatusCode::UNAUTHORIZED, "token", message)
        }
    }

    /// No credentials, on a route that needs them.
    pub fn token_missing() -> Self {
        Self {
            challenge: Some(challenge(None)),
            ..Self::new(StatusCode::UNAUTHORIZED, "token", "is missing")
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, what, "not found")
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate",
                "too many requests, retry later",
            )
        }
    }

    pub fn unavailable(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            what,
            "is unavailable, retry later",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// gRPC code -> HTTP status, the single table for the whole REST surface.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        // RealWorld answers a taken username or email with 422, like any
        // other invalid field; its clients show those errors and no others.
        Code::AlreadyExists => StatusCode::UNPROCESSABLE_ENTITY,
        Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Tonic's own status for a message over the size limit, raised by the
/// upstream (it could not send its answer) or by our client (it could not
/// take it). Its code (OUT_OF_RANGE) would read as the caller's mistake,
/// and its text is internal detail; tonic gives no other mark than the text.
fn is_oversized_message(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::OutOfRange | Code::ResourceExhausted | Code::Internal
    ) && status.message().contains("message length too large")
}

/// The chain of errors under a status (a transport error's is where the
/// diagnosis is: refused, reset, went away), for the log.
fn causes(status: &tonic::Status) -> String {
    let mut chain = Vec::new();
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        chain.push(error.to_string());
        cause = error.source();
    }
    chain.join(": ")
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        // A service's rate limit says when to come back (`google.rpc.RetryInfo`).
        if let Some(retry) = status.get_details_retry_info() {
            let secs = retry.retry_delay.map_or(1, |d| d.as_secs());
            return Self::rate_limited(secs);
        }
        let http = if is_oversized_message(&status) {
            StatusCode::BAD_GATEWAY
        } else {
            http_status(status.code())
        };
        let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(bad_request) = status.get_details_bad_request() {
            for violation in bad_request.field_violations {
                errors
                    .entry(violation.field)
                    .or_default()
                    .push(violation.description);
            }
        }
        if errors.is_empty() {
            let message = if http.is_server_error() {
                // Upstream messages of server errors are internal detail.
                tracing::warn!(
                    code = ?status.code(),
                    message = status.message(),
                    cause = %causes(&status),
                    "upstream error"
                );
                http.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                status.message().to_owned()
            };
            let field = match status.code() {
                Code::Unauthenticated => "token",
                _ => "body",
            };
            errors.insert(field.to_owned(), vec![message]);
        }
        let challenge =
            (status.code() == Code::Unauthenticated).then(|| challenge(Some(status.message())));
        Self {
            status: http,
            errors,
            retry_after_secs: None,
            challenge,
        }
    }
}

/// RealWorld's error body.
#[derive(Serialize)]
struct ErrorBody {
    errors: BTreeMap<String, Vec<String>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            errors: self.errors,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_a_deliberate_status() {
        let cases = [
            (Code::InvalidArgument, 422),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 422),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
        ];
        for (code, expected) in cases {
            assert_eq!(http_status(code).as_u16(), expected, "{code:?}");
        }
    }

    #[test]
    fn an_oversized_upstream_answer_is_a_bad_gateway_without_details() {
        // Tonic's wording on either side of the connection.
        for message in [
            "Error, decoded message length too large: found 17000000 bytes, the limit is: 16777216 bytes",
            "Error, encoded message length too large: found 17000000 bytes, the limit is: 16777216 bytes",
        ] {
            let error = ApiError::from(tonic::Status::out_of_range(message));
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
            assert_eq!(error.errors["body"], vec!["bad gateway"]);
        }
        // A caller's own out-of-range stays theirs.
        let error = ApiError::from(tonic::Status::out_of_range("page 9 does not exist"));
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn internal_messages_do_not_leak() {
        let error = ApiError::from(tonic::Status::internal("relation \"users\" does not exist"));
        assert_eq!(error.errors["body"], vec!["internal server error"]);
    }
}
