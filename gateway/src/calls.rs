//! Calls to the services on behalf of one REST request: a typed client per
//! upstream, made per request by the `Calls` extractor. Every call carries
//! the request's deadline (as `grpc-timeout`, so the service stops working
//! on a call nobody awaits any more), its edge request id and, when acting
//! for a user, their token and the gateway's word that their session is
//! live (checked for this request; the service then asks no session store
//! again, see `quill_platform::authn`); and, like every Quill client, the
//! gateway's service token, the trace context and the shared message-size
//! limits.

use std::{convert::Infallible, time::Duration};

use axum::{extract::FromRequestParts, http::request::Parts};
use quill_platform::{
    authn::{self, VOUCHED_SESSION},
    grpc::{self, AUTHORIZATION, REQUEST_ID, ServiceChannel},
    message_limits,
    quota_headers::Relaying,
};
use quill_proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    content::v1::content_service_client::ContentServiceClient,
    notification::v1::notification_service_client::NotificationServiceClient,
};
use tonic::{
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::{
    extract::AuthUser,
    state::{AppState, Upstreams},
};

/// Each call carries the request's metadata, and relays the rate-limit
/// budgets its answer reports to the REST answer.
type Upstream = InterceptedService<Relaying<ServiceChannel>, CallMetadata>;

pub type AuthClient = AuthServiceClient<Upstream>;
pub type ContentClient = ContentServiceClient<Upstream>;
pub type NotificationClient = NotificationServiceClient<Upstream>;

/// Each method takes who the call acts for: `None` calls anonymously
/// (public reads, registration, login).
pub struct Calls {
    upstreams: Upstreams,
    deadline: Duration,
    request_id: Option<AsciiMetadataValue>,
}

impl Calls {
    pub fn auth(&self, user: Option<&AuthUser>) -> AuthClient {
        message_limits!(AuthServiceClient::new(self.upstream(
            &self.upstreams.auth,
            user,
            Some(self.deadline)
        )))
    }

    pub fn content(&self, user: Option<&AuthUser>) -> ContentClient {
        message_limits!(ContentServiceClient::new(self.upstream(
            &self.upstreams.content,
            user,
            Some(self.deadline)
        )))
    }

    pub fn notification(&self, user: Option<&AuthUser>) -> NotificationClient {
        message_limits!(NotificationServiceClient::new(self.upstream(
            &self.upstreams.notification,
            user,
            Some(self.deadline)
        )))
    }

    /// For `Subscribe`, whose stream is meant to outlive any per-call
    /// deadline: it ends with the user's session or the gateway's shutdown.
    pub fn notification_stream(&self, user: &AuthUser) -> NotificationClient {
        message_limits!(NotificationServiceClient::new(self.upstream(
            &self.upstreams.notification,
            Some(user),
            None
        )))
    }

    // Not the generated `with_interceptor`: it asks for a `Default` response
    // body, which the traced channel's body is not and need not be.
    fn upstream(
        &self,
        channel: &Channel,
        user: Option<&AuthUser>,
        deadline: Option<Duration>,
    ) -> Upstream {
        let metadata = CallMetadata {
            deadline,
            request_id: self.request_id.clone(),
            // A verified JWT is base64url and dots, always a valid value.
            authorization: user.and_then(|user| format!("Bearer {}", user.token).parse().ok()),
            // Uuids and a role name.
            vouch: user.and_then(|user| authn::vouch(&user.caller).parse().ok()),
        };
        InterceptedService::new(
            Relaying::new(grpc::client(channel.clone(), &self.upstreams.credentials)),
            metadata,
        )
    }
}

impl FromRequestParts<AppState> for Calls {
    type Rejection = Infallible;

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
            upstreams: state.upstreams.clone(),
            deadline: state.config.rpc_deadline,
            request_id,
        })
    }
}

/// What the gateway adds to each call it makes for a request.
#[derive(Clone)]
pub struct CallMetadata {
    deadline: Option<Duration>,
    request_id: Option<AsciiMetadataValue>,
    authorization: Option<AsciiMetadataValue>,
    vouch: Option<AsciiMetadataValue>,
}

impl Interceptor for CallMetadata {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(deadline) = self.deadline {
            request.set_timeout(deadline);
        }
        let metadata = request.metadata_mut();
        if let Some(id) = &self.request_id {
            metadata.insert(REQUEST_ID, id.clone());
        }
        if let Some(authorization) = &self.authorization {
            metadata.insert(AUTHORIZATION, authorization.clone());
        }
        if let Some(vouch) = &self.vouch {
            metadata.insert(VOUCHED_SESSION, vouch.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(mut metadata: CallMetadata) -> tonic::metadata::MetadataMap {
        metadata
            .call(tonic::Request::new(()))
            .unwrap()
            .metadata()
            .clone()
    }

    fn full() -> CallMetadata {
        CallMetadata {
            deadline: Some(Duration::from_secs(10)),
            request_id: Some(AsciiMetadataValue::from_static("req-1")),
            authorization: Some(AsciiMetadataValue::from_static("Bearer jwt")),
            vouch: Some(AsciiMetadataValue::from_static("s:u:viewer")),
        }
    }

    #[test]
    fn a_call_carries_deadline_request_id_and_token() {
        let metadata = sent(full());
        assert_eq!(metadata.get("grpc-timeout").unwrap(), "10000000u");
        assert_eq!(metadata.get(REQUEST_ID).unwrap(), "req-1");
        assert_eq!(metadata.get(AUTHORIZATION).unwrap(), "Bearer jwt");
        assert_eq!(metadata.get(VOUCHED_SESSION).unwrap(), "s:u:viewer");
    }

    #[test]
    fn an_anonymous_call_has_no_token_and_a_stream_no_deadline() {
        let metadata = sent(CallMetadata {
            authorization: None,
            vouch: None,
            ..full()
        });
        assert!(metadata.get(AUTHORIZATION).is_none());
        assert!(metadata.get(VOUCHED_SESSION).is_none());
        let metadata = sent(CallMetadata {
            deadline: None,
            ..full()
        });
        assert!(metadata.get("grpc-timeout").is_none());
        assert_eq!(metadata.get(AUTHORIZATION).unwrap(), "Bearer jwt");
    }
}
