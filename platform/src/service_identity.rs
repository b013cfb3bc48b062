//! Which Quill service is calling. Any pod in the cluster can reach any gRPC
//! port, so a call that only another Quill service may make (a follower
//! list, a session check, client details the gateway vouches for) must prove
//! where it comes from.
//!
//! Every outgoing call carries a short-lived token (HS256 JWT, `sub` = the
//! calling service) in `x-quill-service`, signed with a secret that only
//! Quill's processes hold (`SERVICE_TOKEN_SECRET`, a Kubernetes Secret
//! mounted into Quill's pods only). Servers verify it and hand the caller's
//! name to handlers, which allow the services each internal RPC names.
//!
//! Chosen over mTLS because it keeps every port plaintext gRPC, which
//! Kubernetes' native gRPC probes and `grpcurl -plaintext` need; encryption
//! on the wire is a mesh's job (Linkerd, Istio) and composes with this. The
//! limit: the secret is shared, so a compromised Quill process could claim
//! another service's name; per-service keys would close that.

use std::{
    fmt,
    str::FromStr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderValue, Request};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{config::ConfigError, settings};

/// Metadata key carrying the calling service's token.
pub const SERVICE_TOKEN: &str = "x-quill-service";

/// Quill's processes, as callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Gateway,
    Auth,
    Content,
    Notification,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Auth => "auth",
            Service::Content => "content",
            Service::Notification => "notification",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Service {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "gateway" => Ok(Service::Gateway),
            "auth" => Ok(Service::Auth),
            "content" => Ok(Service::Content),
            "notification" => Ok(Service::Notification),
            _ => Err(()),
        }
    }
}

/// The secret every Quill process shares for service tokens.
#[derive(Clone)]
pub struct ServiceSecret(SecretString);

impl fmt::Debug for ServiceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceSecret([redacted])")
    }
}

/// Short enough that brute force is hopeless, long enough to be typed.
const MIN_SECRET_BYTES: usize = 32;

impl ServiceSecret {
    pub fn new(secret: impl Into<String>) -> Result<Self, ConfigError> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError {
                name: "SERVICE_TOKEN_SECRET".into(),
                value: "[redacted]".into(),
                reason: format!("must be at least {MIN_SECRET_BYTES} bytes of random text"),
            });
        }
        Ok(Self(SecretString::from(secret)))
    }

    /// `SERVICE_TOKEN_SECRET`, or the file named by
    /// `SERVICE_TOKEN_SECRET_FILE`; `None` when neither is set. There is no
    /// default, because a default would be known to every pod: serving
    /// without one fails with [`Self::required`]. `just up` makes one per run.
    pub fn from_env_opt() -> Result<Option<Self>, ConfigError> {
        let secret = match settings::SERVICE_TOKEN_SECRET_FILE.value() {
            Some(path) => std::fs::read_to_string(&path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| settings::SERVICE_TOKEN_SECRET_FILE.invalid(path, e.to_string()))?,
            None => match settings::SERVICE_TOKEN_SECRET.value() {
                Some(secret) => secret,
                None => return Ok(None),
            },
        };
        Self::new(secret).map(Some)
    }

    /// The secret a serving process must have.
    pub fn required(secret: Option<&Self>) -> Result<Self, ConfigError> {
        secret.cloned().ok_or_else(|| {
            settings::SERVICE_TOKEN_SECRET.invalid(
                "",
                "must be set to the same random secret (32+ bytes) in every Quill \
                 process, e.g. from `openssl rand -hex 32`",
            )
        })
    }

    fn bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ServiceClaims {
    sub: Service,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
}

const ISSUER: &str = "quill-services";
const AUDIENCE: &str = "quill-services";
/// A token's life: long enough to be reused for many calls, short enough
/// that a captured one is soon worthless.
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// Renewed this long before it expires, so no call carries a token that
/// expires in flight.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints the tokens one service sends, reusing each until shortly before it
/// expires (one HMAC per few minutes, not per call).
#[derive(Clone)]
pub struct ServiceCredentials {
    service: Service,
    key: Arc<EncodingKey>,
    current: Arc<Mutex<Option<(HeaderValue, u64)>>>,
}

impl fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ServiceCredentials {
    pub fn new(service: Service, secret: &ServiceSecret) -> Self {
        Self {
            service,
            key: Arc::new(EncodingKey::from_secret(secret.bytes())),
            current: Arc::new(Mutex::new(None)),
        }
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// The token to send now.
    pub fn token(&self) -> Option<HeaderValue> {
        let now = unix_now();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, expires)) = current.as_ref()
            && now + RENEW_BEFORE.as_secs() < *expires
        {
            return Some(token.clone());
        }
        let claims = ServiceClaims {
            sub: self.service,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + TOKEN_TTL.as_secs(),
        };
        match encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| e.to_string())
            .and_then(|t| HeaderValue::try_from(t).map_err(|e| e.to_string()))
        {
            Ok(token) => {
                *current = Some((token.clone(), claims.exp));
                Some(token)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not mint a service token");
                None
            }
        }
    }
}

/// Verifies the tokens of calling services.
#[derive(Clone)]
pub struct ServiceVerifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

impl ServiceVerifier {
    pub fn new(secret: &ServiceSecret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            key: Arc::new(DecodingKey::from_secret(secret.bytes())),
            validation: Arc::new(validation),
        }
    }

    /// The service a token proves, if it verifies.
    pub fn verify(&self, token: &str) -> Option<Service> {
        decode::<ServiceClaims>(token, &self.key, &self.validation)
            .ok()
            .map(|data| data.claims.sub)
    }
}

/// A client channel whose every call carries the service's token.
#[derive(Clone)]
pub struct Identified<S> {
    inner: S,
    credentials: ServiceCredentials,
}

impl<S> Identified<S> {
    pub fn new(inner: S, credentials: ServiceCredentials) -> Self {
        Self { inner, credentials }
    }
}

impl<S, B> tower::Service<Request<B>> for Identified<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(token) = self.credentials.token() {
            request.headers_mut().insert(SERVICE_TOKEN, token);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ServiceSecret {
        ServiceSecret::new(s.repeat(32)).unwrap()
    }

    #[test]
    fn a_token_proves_its_service_only_under_the_same_secret() {
        let token = ServiceCredentials::new(Service::Notification, &secret("a"))
            .token()
            .unwrap();
        let token = token.to_str().unwrap();
        assert_eq!(
            ServiceVerifier::new(&secret("a")).verify(token),
            Some(Service::Notification)
        );
        assert_eq!(ServiceVerifier::new(&secret("b")).verify(token), None);
        assert_eq!(
            ServiceVerifier::new(&secret("a")).verify("not.a.token"),
            None
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(ServiceSecret::new("short").is_err());
    }

    #[test]
    fn tokens_are_reused_until_close_to_expiry() {
        let credentials = ServiceCredentials::new(Service::Gateway, &secret("a"));
        assert_eq!(credentials.token(), credentials.token());
    }
}
