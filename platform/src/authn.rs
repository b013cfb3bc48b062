//! Who is calling, established once per request for every service.
//!
//! A tower layer on each gRPC server reads the two credentials a call may
//! carry: a user's access token (`authorization`), verified and then checked
//! against the session's current state ([`crate::sessions`]: revoked
//! sessions refused, the role as it is now, not as the token says), and a
//! calling service's token ([`crate::service_identity`]). It puts the
//! outcome into the request's extensions; handlers ask [`caller`],
//! [`maybe_caller`] or [`require_service`] and get a typed answer.
//!
//! A token that is present but bad is refused even where anonymous calls
//! are fine: the client meant to act as someone and must learn it did not.
//!
//! The gateway checks the session of every request it serves before it
//! calls a service, and says so on the call ([`VOUCHED_SESSION`]): a
//! service takes that word from the gateway alone (its service token proves
//! it) and only for the session and user of the token it came with, so a
//! request through the edge costs one session check, not one per hop. Any
//! other caller's call is checked here in full.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::future::BoxFuture;
use http::{HeaderMap, Request};
use quill_proto::auth::v1::{CheckSessionRequest, auth_service_client::AuthServiceClient};
use secrecy::ExposeSecret;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    authz::Role,
    cache::Found,
    config::ConfigError,
    error_info::{self, reason},
    grpc::{AUTHORIZATION, ServiceChannel},
    service_identity::{
        SERVICE_TOKEN, Service, ServiceCredentials, ServiceSecret, ServiceVerifier,
    },
    sessions::{SessionError, SessionSource, SessionStatus, Sessions},
    settings,
    token::{Claims, TokenError, TokenVerifier},
};

/// A user acting through a live session, with the role they hold now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user: Uuid,
    pub session: Uuid,
    pub role: Role,
    /// When the access token expires (Unix seconds): long-lived responses
    /// (streams) end then.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("missing access token")]
    Missing,
    #[error("access token is invalid")]
    Invalid,
    #[error("access token has expired")]
    Expired,
    #[error("session has ended")]
    Ended,
    /// The session's state could not be learned: refused, never admitted.
    #[error("session store unavailable")]
    Unavailable,
}

impl From<AuthnError> for Status {
    fn from(error: AuthnError) -> Self {
        let (code, why) = match error {
            AuthnError::Missing => (Code::Unauthenticated, reason::TOKEN_MISSING),
            AuthnError::Invalid => (Code::Unauthenticated, reason::TOKEN_INVALID),
            AuthnError::Expired => (Code::Unauthenticated, reason::TOKEN_EXPIRED),
            AuthnError::Ended => (Code::Unauthenticated, reason::SESSION_ENDED),
            AuthnError::Unavailable => (Code::Unavailable, reason::SESSION_CHECK_UNAVAILABLE),
        };
        error_info::status(code, why, error.to_string())
    }
}

/// Metadata by which the gateway vouches that it found the call's session
/// live while serving the request: `<session>:<user>:<role>`.
pub const VOUCHED_SESSION: &str = "x-quill-vouched-session";

/// The [`VOUCHED_SESSION`] value for a caller the gateway has checked.
pub fn vouch(caller: &Caller) -> String {
    format!("{}:{}:{}", caller.session, caller.user, caller.role)
}

/// A [`vouch`] read back: `(session, user, role)`.
fn vouched(value: &str) -> Option<(Uuid, Uuid, Role)> {
    let mut parts = value.splitn(3, ':');
    let session = parts.next()?.parse().ok()?;
    let user = parts.next()?.parse().ok()?;
    let role = parts.next()?.parse().ok()?;
    Some((session, user, role))
}

/// Verifies user and service tokens; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<TokenVerifier>,
    sessions: Sessions,
    services: ServiceVerifier,
}

/// Tokens verify with this much leeway past `exp` (see [`TokenVerifier`]).
const LEEWAY_SECS: i64 = 5;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Authenticator {
    pub fn new(tokens: TokenVerifier, sessions: Sessions, services: ServiceVerifier) -> Self {
        Self {
            tokens: Arc::new(tokens),
            sessions,
            services,
        }
    }

    /// The caller behind an access token: it verifies, and its session is
    /// live now.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthnError> {
        self.authenticate_vouched(token, None).await
    }

    /// [`Self::authenticate`], reading in the same round trip to Redis the
    /// keys `along` names for the token's claims (a cache entry of the
    /// caller's, say): their values come back beside the caller, `None`
    /// when the token did not verify or Redis could not be read.
    pub async fn authenticate_along(
        &self,
        token: &str,
        along: impl FnOnce(&Claims) -> Vec<String>,
    ) -> (Result<Caller, AuthnError>, Option<Found>) {
        match self.claims(token).await {
            Ok(claims) => {
                let keys = along(&claims);
                self.session_caller(&claims, &keys).await
            }
            Err(e) => (Err(e), None),
        }
    }

    /// [`Self::authenticate`], taking the gateway's word for the session
    /// when `vouch` (a [`VOUCHED_SESSION`] value the caller has proved comes
    /// from the gateway) names the token's own session and user. The token
    /// itself is verified either way.
    async fn authenticate_vouched(
        &self,
        token: &str,
        vouch: Option<&str>,
    ) -> Result<Caller, AuthnError> {
        let claims = self.claims(token).await?;
        if let Some((session, user, role)) = vouch.and_then(vouched)
            && session == claims.sid
            && user == claims.sub
        {
            return Ok(Caller {
                user,
                session,
                role,
                expires_at: claims.exp,
            });
        }
        self.session_caller(&claims, &[]).await.0
    }

    async fn claims(&self, token: &str) -> Result<Claims, AuthnError> {
        self.tokens
            .verify_fetching(token)
            .await
            .map_err(|e| match e {
                TokenError::Expired => AuthnError::Expired,
                _ => AuthnError::Invalid,
            })
    }

    /// The caller, if the session of verified `claims` is live now; the
    /// values of the keys `along`, read in the same round trip.
    async fn session_caller(
        &self,
        claims: &Claims,
        along: &[String],
    ) -> (Result<Caller, AuthnError>, Option<Found>) {
        let remaining = (claims.exp + LEEWAY_SECS - unix_now()).max(1) as u64;
        let (status, along) = self
            .sessions
            .status_along(claims.sid, Duration::from_secs(remaining), along)
            .await;
        let caller = match status {
            Ok(SessionStatus::Live { user, role }) if user == claims.sub => Ok(Caller {
                user,
                session: claims.sid,
                role,
                expires_at: claims.exp,
            }),
            Ok(_) => Err(AuthnError::Ended),
            Err(e) => {
                tracing::warn!(error = %e, "refusing a call: session state unknown");
                Err(AuthnError::Unavailable)
            }
        };
        (caller, along)
    }

    /// The service a service token proves.
    pub fn service(&self, token: &str) -> Option<Service> {
        self.services.verify(token)
    }

    /// Resolves when a long-lived response for `caller` must end: when the
    /// access token expires, or when a check (every `recheck`) finds the
    /// session ended (logout, ban, password change) or cannot tell.
    pub async fn session_ended(&self, caller: &Caller, recheck: Duration) {
        let expiry = Duration::from_secs((caller.expires_at - unix_now()).max(0) as u64);
        let expired = tokio::time::sleep(expiry);
        tokio::pin!(expired);
        let mut ticks = tokio::time::interval(recheck);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = &mut expired => return,
                _ = ticks.tick() => {
                    let remaining = Duration::from_secs(
                        (caller.expires_at + LEEWAY_SECS - unix_now()).max(1) as u64,
                    );
                    match self.sessions.status(caller.session, remaining).await {
                        Ok(SessionStatus::Live { user, .. }) if user == caller.user => {}
                        _ => return,
                    }
                }
            }
        }
    }
}

/// The session source for every process but auth: auth's `CheckSession`,
/// an internal RPC answered only to Quill services.
pub struct AuthSessionSource {
    auth: AuthServiceClient<ServiceChannel>,
}

impl AuthSessionSource {
    pub fn new(auth: ServiceChannel) -> Self {
        Self {
            auth: AuthServiceClient::new(auth),
        }
    }
}

#[async_trait::async_trait]
impl SessionSource for AuthSessionSource {
    async fn status(&self, session: Uuid) -> Result<SessionStatus, SessionError> {
        let mut request = tonic::Request::new(CheckSessionRequest {
            session_id: session.to_string(),
        });
        request.set_timeout(Duration::from_secs(2));
        let reply = self
            .auth
            .clone()
            .check_session(request)
            .await
            .map_err(|s| SessionError::Unavailable(format!("auth CheckSession: {s}")))?
            .into_inner();
        if !reply.live {
            return Ok(SessionStatus::Ended);
        }
        let user = reply
            .user_id
            .parse()
            .map_err(|_| SessionError::Unavailable("auth answered a malformed user id".into()))?;
        let role = quill_proto::auth::v1::Role::try_from(reply.role)
            .ok()
            .and_then(Role::from_proto)
            .ok_or_else(|| SessionError::Unavailable("auth answered no role".into()))?;
        Ok(SessionStatus::Live { user, role })
    }
}

/// The outcome of reading a request's user credentials.
#[derive(Debug, Clone)]
enum Identity {
    Anonymous,
    User(Caller),
    Refused(AuthnError),
}

/// The acting user; refuses anonymous calls.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    maybe_caller(request)?.ok_or_else(|| AuthnError::Missing.into())
}

/// The acting user, if the call carries a token; a bad token is refused.
pub fn maybe_caller<T>(request: &tonic::Request<T>) -> Result<Option<Caller>, Status> {
    match request.extensions().get::<Identity>() {
        Some(Identity::User(caller)) => Ok(Some(*caller)),
        Some(Identity::Refused(e)) => Err(e.clone().into()),
        Some(Identity::Anonymous) => Ok(None),
        // The layer did not run: a wiring mistake, refused rather than
        // served as anonymous.
        None => {
            tracing::error!("authentication layer missing");
            Err(error_info::internal())
        }
    }
}

/// The calling Quill service, if the call proves one.
pub fn calling_service<T>(request: &tonic::Request<T>) -> Option<Service> {
    request.extensions().get::<Service>().copied()
}

/// Admits only calls from one of `allowed` (internal RPCs).
pub fn require_service<T>(
    request: &tonic::Request<T>,
    allowed: &[Service],
) -> Result<Service, Status> {
    match calling_service(request) {
        Some(service) if allowed.contains(&service) => Ok(service),
        Some(service) => Err(error_info::status(
            Code::PermissionDenied,
            reason::SERVICE_NOT_ALLOWED,
            format!("this call is not open to the {service} service"),
        )),
        None => Err(error_info::status(
            Code::PermissionDenied,
            reason::SERVICE_NOT_ALLOWED,
            "this call is internal to Quill's services",
        )),
    }
}

/// The bearer token of a request, if it carries one (`Bearer` or RealWorld's
/// `Token` scheme).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Server middleware that establishes [`Identity`] and the calling
/// [`Service`] for every call.
#[derive(Clone)]
pub struct AuthnLayer {
    authn: Authenticator,
}

impl AuthnLayer {
    pub fn new(authn: Authenticator) -> Self {
        Self { authn }
    }
}

impl<S> tower::Layer<S> for AuthnLayer {
    type Service = Authn<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authn {
            inner,
            authn: self.authn.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authn<S> {
    inner: S,
    authn: Authenticator,
}

impl<S, B> tower::Service<Request<B>> for Authn<S>
where
    S: tower::Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call; a fresh clone
        // stays for the next (tower's rule for services called from futures).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let authn = self.authn.clone();
        Box::pin(async move {
            let service = request
                .headers()
                .get(SERVICE_TOKEN)
                .and_then(|v| v.to_str().ok())
                .and_then(|token| authn.service(token));
            if let Some(service) = service {
                request.extensions_mut().insert(service);
            }
            let vouch = request
                .headers()
                .get(VOUCHED_SESSION)
                .and_then(|v| v.to_str().ok())
                .filter(|_| service == Some(Service::Gateway));
            let identity = match bearer_token(request.headers()) {
                None => Identity::Anonymous,
                Some(token) => match authn.authenticate_vouched(token, vouch).await {
                    Ok(caller) => Identity::User(caller),
                    Err(e) => Identity::Refused(e),
                },
            };
            request.extensions_mut().insert(identity);
            inner.call(request).await
        })
    }
}

/// The settings every process needs to authenticate callers and to prove
/// itself to other services.
#[derive(Debug, Clone)]
pub struct AuthnConfig {
    /// `REDIS_URL`: where session states are cached.
    pub redis_url: crate::config::Secret,
    /// `REDIS_PREFIX`: namespaces Redis keys; the same in every process.
    pub redis_prefix: String,
    /// `SERVICE_TOKEN_SECRET`: required to serve, not to migrate.
    pub service_secret: Option<ServiceSecret>,
}

impl AuthnConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            redis_url: settings::REDIS_URL
                .secret()
                .ok_or_else(|| settings::REDIS_URL.invalid("", "must be set"))?,
            redis_prefix: settings::REDIS_PREFIX.get()?,
            service_secret: ServiceSecret::from_env_opt()?,
        })
    }
}

/// What a process other than auth needs to authenticate its callers and to
/// call other services: built from auth's public keys, the Redis session
/// cache in front of auth's `CheckSession`, and this service's credentials.
pub struct ServiceAuth {
    pub authn: Authenticator,
    pub credentials: ServiceCredentials,
    pub redis: redis::aio::ConnectionManager,
}

impl ServiceAuth {
    /// Connects to Redis and fetches auth's keys (retrying while auth
    /// starts); `auth` is the channel to auth.
    pub async fn connect(
        service: Service,
        config: &AuthnConfig,
        auth: tonic::transport::Channel,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let secret = ServiceSecret::required(config.service_secret.as_ref())?;
        let credentials = ServiceCredentials::new(service, &secret);
        let redis = crate::sessions::connect(config.redis_url.expose_secret()).await?;
        let tokens = TokenVerifier::from_auth_service(auth.clone()).await?;
        let source = AuthSessionSource::new(crate::grpc::client(auth, &credentials));
        let sessions = Sessions::new(redis.clone(), config.redis_prefix.clone(), Arc::new(source));
        Ok(Self {
            authn: Authenticator::new(tokens, sessions, ServiceVerifier::new(&secret)),
            credentials,
            redis,
        })
    }
}
