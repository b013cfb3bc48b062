//! What can go wrong in the auth service, and its one mapping to gRPC.

use quill_platform::{
    authz::Denied,
    error_info::{self, reason},
    grpc::{FieldViolations, field_violations},
    rate_limit::RateLimited,
};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid input")]
    Invalid(FieldViolations),
    #[error("{0} has already been taken")]
    Taken(&'static str),
    #[error("email or password is invalid")]
    InvalidCredentials,
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("account is banned")]
    Banned,
    #[error(transparent)]
    Forbidden(#[from] Denied),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error("changing the email or password needs the current password or a recent login")]
    ReauthRequired,
    #[error("current password is incorrect")]
    ReauthFailed,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Internal(String),
}

impl AuthError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![(field, message.into())])
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Invalid(violations) => {
                field_violations(Code::InvalidArgument, reason::INVALID_FIELDS, &violations)
            }
            AuthError::Taken(field) => field_violations(
                Code::AlreadyExists,
                reason::ALREADY_TAKEN,
                &[(field, "has already been taken".to_owned())],
            ),
            AuthError::InvalidCredentials => field_violations(
                Code::Unauthenticated,
                reason::CREDENTIALS_INVALID,
                &[("email or password", "is invalid".to_owned())],
            ),
            AuthError::Unauthenticated(why) => {
                error_info::status(Code::Unauthenticated, reason::UNAUTHENTICATED, why)
            }
            AuthError::Banned => error_info::status(
                Code::PermissionDenied,
                reason::ACCOUNT_BANNED,
                "account is banned",
            ),
            AuthError::Forbidden(denied) => denied.into(),
            AuthError::NotFound(what) => error_info::not_found(what),
            AuthError::RateLimited(limited) => limited.into(),
            AuthError::ReauthRequired => field_violations(
                Code::PermissionDenied,
                reason::REAUTHENTICATION_REQUIRED,
                &[(
                    "currentPassword",
                    "is required to change the email or password (or sign in again)".to_owned(),
                )],
            ),
            AuthError::ReauthFailed => field_violations(
                Code::PermissionDenied,
                reason::REAUTHENTICATION_FAILED,
                &[("currentPassword", "is incorrect".to_owned())],
            ),
            // Internal details go to the log, never to the client.
            AuthError::Database(_) | AuthError::Redis(_) | AuthError::Internal(_) => {
                tracing::error!(error = %error, "internal error");
                error_info::internal()
            }
        }
    }
}
