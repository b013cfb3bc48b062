//! Access-token verification with public keys only. The auth service signs;
//! every other process verifies with the keys auth publishes.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use quill_proto::auth::v1::{GetPublicKeysRequest, auth_service_client::AuthServiceClient};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::authz::Role;

/// The claims of a Quill access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// Session id; revoking the session invalidates the token.
    pub sid: Uuid,
    pub role: Role,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed or its signature is invalid")]
    Invalid,
    #[error("token has expired")]
    Expired,
    #[error("token was signed with an unknown key")]
    UnknownKey,
    #[error("public key is unusable: {0}")]
    BadKey(String),
}

/// The audience of session tokens: the access tokens' audience, marked, so
/// verifiers that check signatures alone (and so cannot see a revocation)
/// refuse tokens that live for days.
pub fn session_audience(audience: &str) -> String {
    format!("{audience}:session")
}

/// Verifies EdDSA-signed access and session tokens against a set of public
/// keys by `kid`. Accepting session tokens is safe only because every Quill
/// process follows a verification with the session check
/// ([`crate::authn`]).
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, TokenError> {
        let keys = keys
            .into_iter()
            .map(|(kid, pem)| {
                DecodingKey::from_ed_pem(pem.as_bytes())
                    .map(|key| (kid.to_owned(), key))
                    .map_err(|e| TokenError::BadKey(e.to_string()))
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        // Only EdDSA is accepted, so `alg: none` and HMAC-with-the-public-key
        // confusion are rejected before any signature check.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience.to_owned(), session_audience(audience)]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self { keys, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = match header.kid {
            Some(kid) => self.keys.get(&kid).ok_or(TokenError::UnknownKey)?,
            None => return Err(TokenError::UnknownKey),
        };
        decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// Builds a verifier from the keys the auth service publishes, retrying
    /// while auth is not reachable yet.
    pub async fn from_auth_service(
        channel: tonic::transport::Channel,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let response = crate::retry::with_backoff("fetching auth public keys", 30, || {
            let mut client = crate::message_limits!(AuthServiceClient::new(channel.clone()));
            // A balanced channel with no replica yet waits rather than
            // fails: bound each attempt so the retries go on.
            async move {
                tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    client.get_public_keys(GetPublicKeysRequest {}),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded("no auth replica answered"))
                })
            }
        })
        .await?
        .into_inner();
        let verifier = Self::new(
            response
                .keys
                .iter()
                .map(|k| (k.kid.as_str(), k.public_key_pem.as_str())),
            &response.issuer,
            &response.audience,
        )?;
        Ok(verifier)
    }
}
