//! What can go wrong in the notification service, and its one mapping to gRPC.

use quill_platform::{
    error_info::{self, reason},
    grpc::{FieldViolations, field_violations},
};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("invalid input")]
    Invalid(FieldViolations),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A cap on open live streams is reached; the caller may retry once one
    /// of its streams has ended.
    #[error("{0}")]
    TooManyStreams(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl NotificationError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![(field, message.into())])
    }
}

impl From<NotificationError> for Status {
    fn from(error: NotificationError) -> Self {
        match error {
            NotificationError::Invalid(violations) => {
                field_violations(Code::InvalidArgument, reason::INVALID_FIELDS, &violations)
            }
            NotificationError::NotFound(what) => error_info::not_found(what),
            NotificationError::TooManyStreams(why) => {
                error_info::status(Code::ResourceExhausted, reason::TOO_MANY_STREAMS, why)
            }
            // Internal details go to the log, never to the client.
            NotificationError::Database(_) => {
                tracing::error!(error = %error, "internal error");
                error_info::internal()
            }
        }
    }
}
