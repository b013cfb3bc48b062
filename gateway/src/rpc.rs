//! Building outgoing gRPC requests: every call carries a deadline (sent as
//! `grpc-timeout`, so the service stops working on a call nobody awaits), the
//! edge request id, and, when acting for a user, their token.

use std::time::Duration;

use axum::{extract::FromRequestParts, http::request::Parts};
use quill_platform::grpc::{AUTHORIZATION, REQUEST_ID};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::{error::ApiError, extract::AuthUser, state::AppState};

pub struct Rpc {
    deadline: Duration,
    request_id: Option<AsciiMetadataValue>,
}

impl Rpc {
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        if let Some(id) = &self.request_id {
            request.metadata_mut().insert(REQUEST_ID, id.clone());
        }
        request
    }

    pub fn authed<T>(&self, message: T, user: &AuthUser) -> tonic::Request<T> {
        let mut request = self.request(message);
        // A verified JWT is base64url and dots, always a valid header value.
        if let Ok(value) = MetadataValue::try_from(format!("Bearer {}", user.token)) {
            request.metadata_mut().insert(AUTHORIZATION, value);
        }
        request
    }

    pub fn maybe_authed<T>(&self, message: T, user: Option<&AuthUser>) -> tonic::Request<T> {
        match user {
            Some(user) => self.authed(message, user),
            None => self.request(message),
        }
    }
}

impl FromRequestParts<AppState> for Rpc {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            deadline: state.config.rpc_deadline,
            request_id,
        })
    }
}
