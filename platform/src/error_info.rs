//! Errors a caller can branch on: every status a Quill service answers with
//! carries a `google.rpc.ErrorInfo` whose `reason` is stable and whose
//! `domain` is [`DOMAIN`] (AIP-193), beside any other detail (field
//! violations, retry info). Messages are for people and may change; a
//! reason is part of the contract: add new ones, never rename one.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The domain of every Quill reason.
pub const DOMAIN: &str = "quill";

/// The reasons, one per thing that can go wrong for a caller.
pub mod reason {
    /// Fields of the request are wrong (`google.rpc.BadRequest` names them).
    pub const INVALID_FIELDS: &str = "INVALID_FIELDS";
    /// A unique value (username, email) belongs to someone else.
    pub const ALREADY_TAKEN: &str = "ALREADY_TAKEN";
    pub const CREDENTIALS_INVALID: &str = "CREDENTIALS_INVALID";
    /// Changing the email or password needs the current password.
    pub const REAUTHENTICATION_REQUIRED: &str = "REAUTHENTICATION_REQUIRED";
    pub const REAUTHENTICATION_FAILED: &str = "REAUTHENTICATION_FAILED";
    pub const TOKEN_MISSING: &str = "TOKEN_MISSING";
    pub const TOKEN_INVALID: &str = "TOKEN_INVALID";
    pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
    /// Logged out, banned, password changed, refresh token reused.
    pub const SESSION_ENDED: &str = "SESSION_ENDED";
    /// Who is calling could not be learned now; retry.
    pub const SESSION_CHECK_UNAVAILABLE: &str = "SESSION_CHECK_UNAVAILABLE";
    /// auth refused a token or credential of its own (a refresh token).
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const ACCOUNT_BANNED: &str = "ACCOUNT_BANNED";
    /// The caller's role lacks a permission (metadata `permission`).
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    /// An internal call from a service it is not open to, or from none.
    pub const SERVICE_NOT_ALLOWED: &str = "SERVICE_NOT_ALLOWED";
    /// Metadata `resource` says what was not found.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// `google.rpc.RetryInfo` says when to come back.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const TOO_MANY_STREAMS: &str = "TOO_MANY_STREAMS";
    /// What the call wrote kept changing under it (metadata `resource`);
    /// retry.
    pub const CONTENDED: &str = "CONTENDED";
    /// A service this one needs did not answer (metadata `upstream`); retry.
    pub const UPSTREAM_UNAVAILABLE: &str = "UPSTREAM_UNAVAILABLE";
    pub const INTERNAL: &str = "INTERNAL";
}

/// A status with `message` and an ErrorInfo of `reason`.
pub fn status(code: Code, reason: &'static str, message: impl Into<String>) -> Status {
    with_details(code, reason, &[], message, ErrorDetails::new())
}

/// A status with `message` and an ErrorInfo of `reason` with `metadata`.
pub fn with_metadata(
    code: Code,
    reason: &'static str,
    metadata: &[(&str, &str)],
    message: impl Into<String>,
) -> Status {
    with_details(code, reason, metadata, message, ErrorDetails::new())
}

/// A status with `message`, `details`, and an ErrorInfo of `reason` with
/// `metadata`.
pub fn with_details(
    code: Code,
    reason: &'static str,
    metadata: &[(&str, &str)],
    message: impl Into<String>,
    mut details: ErrorDetails,
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    details.set_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

/// NOT_FOUND of `resource` ("article", "user").
pub fn not_found(resource: &str) -> Status {
    with_metadata(
        Code::NotFound,
        reason::NOT_FOUND,
        &[("resource", resource)],
        format!("{resource} not found"),
    )
}

/// INTERNAL, saying nothing of what went wrong (that goes to the log).
pub fn internal() -> Status {
    status(Code::Internal, reason::INTERNAL, "internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_names_its_reason_and_keeps_its_other_details() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("title", "can't be blank");
        let status = with_details(
            Code::InvalidArgument,
            reason::INVALID_FIELDS,
            &[],
            "title can't be blank",
            details,
        );
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_FIELDS");
        assert_eq!(info.domain, "quill");
        assert_eq!(
            status
                .get_details_bad_request()
                .expect("bad request")
                .field_violations[0]
                .field,
            "title"
        );
        let missing = not_found("article");
        let info = missing.get_details_error_info().expect("error info");
        assert_eq!(
            (info.reason.as_str(), info.metadata["resource"].as_str()),
            ("NOT_FOUND", "article")
        );
    }
}
