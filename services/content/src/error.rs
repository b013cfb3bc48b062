//! What can go wrong in the content service, and its one mapping to gRPC.

use quill_platform::{
    authz::Denied,
    error_info::{self, reason},
    grpc::{FieldViolations, field_violations},
};
use tonic::{Code, Status};

use crate::batches::Stopped;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("invalid input")]
    Invalid(FieldViolations),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error(transparent)]
    Forbidden(#[from] Denied),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// What the write announces (an article) kept changing between its
    /// read and the write; the caller may retry.
    #[error("{0} kept changing under the write")]
    Contended(&'static str),
    /// A dependency (auth) failed; the caller may retry.
    #[error("{what} unavailable: {status}")]
    Upstream {
        what: &'static str,
        status: Box<Status>,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl ContentError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![(field, message.into())])
    }

    pub fn auth_unavailable(status: Status) -> Self {
        Self::Upstream {
            what: "auth",
            status: Box::new(status),
        }
    }
}

/// The writers stop only as the process does.
impl From<Stopped> for ContentError {
    fn from(stopped: Stopped) -> Self {
        Self::Internal(stopped.to_string())
    }
}

impl From<ContentError> for Status {
    fn from(error: ContentError) -> Self {
        match error {
            ContentError::Invalid(violations) => {
                field_violations(Code::InvalidArgument, reason::INVALID_FIELDS, &violations)
            }
            ContentError::Unauthenticated(why) => {
                error_info::status(Code::Unauthenticated, reason::UNAUTHENTICATED, why)
            }
            ContentError::Forbidden(denied) => denied.into(),
            ContentError::NotFound(what) => error_info::not_found(what),
            ContentError::Contended(what) => error_info::with_metadata(
                Code::Aborted,
                reason::CONTENDED,
                &[("resource", what)],
                format!("the {what} kept changing, try again"),
            ),
            ContentError::Upstream { what, ref status } => {
                tracing::warn!(error = %status, "{what} call failed");
                error_info::with_metadata(
                    Code::Unavailable,
                    reason::UPSTREAM_UNAVAILABLE,
                    &[("upstream", what)],
                    format!("{what} is unavailable, try again"),
                )
            }
            // Internal details go to the log, never to the client.
            ContentError::Database(_) | ContentError::Internal(_) => {
                tracing::error!(error = %error, "internal error");
                error_info::internal()
            }
        }
    }
}
