//! The gRPC face of auth: take the caller the authentication layer
//! established (`quill_platform::authn`), translate messages, and delegate to
//! `Accounts`.

use quill_platform::{
    authn, authz::Role, config::Secret, service_identity::Service, sessions::SessionStatus,
    time::to_proto,
};
use quill_proto::auth::v1::{self as pb, auth_service_server::AuthService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    accounts::{Accounts, Client, Credentials, ProfileUpdate, role_of},
    error::AuthError,
    repo::{sessions::SessionRow, users::UserRow},
};

pub struct AuthGrpc {
    accounts: Accounts,
}

impl AuthGrpc {
    pub fn new(accounts: Accounts) -> Self {
        Self { accounts }
    }

    /// The user behind the call's live session (established by the
    /// authentication layer) and that session.
    async fn acting_user<T>(&self, request: &Request<T>) -> Result<(UserRow, Uuid), Status> {
        let caller = authn::caller(request)?;
        let user = self.accounts.current_user(&caller).await?;
        Ok((user, caller.session))
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Reply<pb::AuthResponse> {
        let client = client_of(&request);
        let r = request.into_inner();
        let (user, credentials) = self
            .accounts
            .register(&r.email, &r.username, r.password.into(), client)
            .await?;
        Ok(Response::new(auth_response(&user, credentials)))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::AuthResponse> {
        let client = client_of(&request);
        let r = request.into_inner();
        let (user, credentials) = self
            .accounts
            .login(&r.email, r.password.into(), client)
            .await?;
        Ok(Response::new(auth_response(&user, credentials)))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Reply<pb::AuthResponse> {
        let (user, credentials) = self
            .accounts
            .refresh(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(auth_response(&user, credentials)))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Reply<pb::User> {
        let (user, _) = self.acting_user(&request).await?;
        Ok(Response::new(user_message(&user)))
    }

    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Reply<pb::User> {
        let (user, session) = self.acting_user(&request).await?;
        let r = request.into_inner();
        let update = ProfileUpdate {
            email: r.email,
            username: r.username,
            password: r.password.map(Secret::from),
            bio: r.bio,
            image: r.image,
            current_password: r.current_password.map(Secret::from),
        };
        let updated = self.accounts.update(&user, session, update).await?;
        Ok(Response::new(user_message(&updated)))
    }

    async fn get_user_by_username(
        &self,
        request: Request<pb::GetUserByUsernameRequest>,
    ) -> Reply<pb::Profile> {
        let user = self
            .accounts
            .by_username(&request.into_inner().username)
            .await?;
        Ok(Response::new(profile_message(&user)))
    }

    async fn get_users_by_ids(
        &self,
        request: Request<pb::GetUsersByIdsRequest>,
    ) -> Reply<pb::GetUsersByIdsResponse> {
        const MAX_IDS: usize = 1_000;
        authn::require_service(&request, &[Service::Content])?;
        let ids = request.into_inner().ids;
        if ids.len() > MAX_IDS {
            return Err(AuthError::invalid("ids", format!("at most {MAX_IDS} per call")).into());
        }
        // Malformed ids cannot match a user; they are simply absent.
        let ids: Vec<Uuid> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        let users = self.accounts.by_ids(&ids).await?;
        Ok(Response::new(pb::GetUsersByIdsResponse {
            users: users.iter().map(profile_message).collect(),
        }))
    }

    async fn get_public_keys(
        &self,
        _request: Request<pb::GetPublicKeysRequest>,
    ) -> Reply<pb::GetPublicKeysResponse> {
        let issuer = self.accounts.issuer();
        Ok(Response::new(pb::GetPublicKeysResponse {
            keys: issuer
                .public_keys()
                .into_iter()
                .map(|key| pb::PublicKey {
                    kid: key.kid,
                    algorithm: "EdDSA".into(),
                    public_key_pem: key.public_key_pem,
                    jwk_x: key.jwk_x,
                })
                .collect(),
            issuer: issuer.issuer.clone(),
            audience: issuer.audience.clone(),
        }))
    }

    async fn check_session(
        &self,
        request: Request<pb::CheckSessionRequest>,
    ) -> Reply<pb::CheckSessionResponse> {
        authn::require_service(
            &request,
            &[Service::Gateway, Service::Content, Service::Notification],
        )?;
        // A malformed id names no session: it is simply not live.
        let status = match request.get_ref().session_id.parse() {
            Ok(session) => self.accounts.session_status(session).await?,
            Err(_) => SessionStatus::Ended,
        };
        Ok(Response::new(match status {
            SessionStatus::Live { user, role } => pb::CheckSessionResponse {
                live: true,
                user_id: user.to_string(),
                role: role.to_proto().into(),
            },
            SessionStatus::Ended => pb::CheckSessionResponse::default(),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Reply<pb::ListSessionsResponse> {
        let (user, current) = self.acting_user(&request).await?;
        let sessions = self.accounts.sessions(&user).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions
                .iter()
                .map(|s| session_message(s, current))
                .collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Reply<pb::RevokeSessionResponse> {
        let (user, _) = self.acting_user(&request).await?;
        let session = request
            .get_ref()
            .session_id
            .parse()
            .map_err(|_| AuthError::NotFound("session"))?;
        self.accounts
            .revoke_session(&user, session, "revoked by user")
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        let (user, session) = self.acting_user(&request).await?;
        self.accounts
            .revoke_session(&user, session, "logout")
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn logout_all(
        &self,
        request: Request<pb::LogoutAllRequest>,
    ) -> Reply<pb::LogoutAllResponse> {
        let (user, _) = self.acting_user(&request).await?;
        let revoked = self.accounts.revoke_all_sessions(&user).await?;
        Ok(Response::new(pb::LogoutAllResponse {
            revoked_sessions: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Reply<pb::ListUsersResponse> {
        let (actor, _) = self.acting_user(&request).await?;
        let r = request.into_inner();
        let page = self
            .accounts
            .list_users(&actor, &r.query, r.limit, r.offset)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.users.iter().map(user_message).collect(),
            total: page.total,
        }))
    }

    async fn set_user_role(&self, request: Request<pb::SetUserRoleRequest>) -> Reply<pb::User> {
        let (actor, _) = self.acting_user(&request).await?;
        let r = request.into_inner();
        let role = pb::Role::try_from(r.role)
            .ok()
            .and_then(Role::from_proto)
            .ok_or_else(|| AuthError::invalid("role", "must be viewer, creator or admin"))?;
        let user = self.accounts.set_role(&actor, &r.username, role).await?;
        Ok(Response::new(user_message(&user)))
    }

    async fn ban_user(&self, request: Request<pb::BanUserRequest>) -> Reply<pb::User> {
        let (actor, _) = self.acting_user(&request).await?;
        let user = self
            .accounts
            .set_banned(&actor, &request.get_ref().username, true)
            .await?;
        Ok(Response::new(user_message(&user)))
    }

    async fn unban_user(&self, request: Request<pb::UnbanUserRequest>) -> Reply<pb::User> {
        let (actor, _) = self.acting_user(&request).await?;
        let user = self
            .accounts
            .set_banned(&actor, &request.get_ref().username, false)
            .await?;
        Ok(Response::new(user_message(&user)))
    }
}

/// The client opening a session: as the gateway reports it, when the call
/// proves it comes from the gateway; otherwise the connection's own address
/// and user agent, since anyone else could claim any address (and pick
/// their own rate-limit key).
fn client_of<T: HasClient>(request: &Request<T>) -> Client {
    let peer = || request.remote_addr().map(|a| a.ip().to_string());
    let (user_agent, ip) = match request.get_ref().client() {
        Some(info) if authn::calling_service(request) == Some(Service::Gateway) => {
            let ip = Some(info.ip.clone()).filter(|ip| !ip.is_empty());
            (info.user_agent.clone(), ip.or_else(peer))
        }
        _ => {
            let agent = request
                .metadata()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (agent, peer())
        }
    };
    // Bounded: these are echoed back in the session list.
    Client {
        user_agent: user_agent.chars().take(512).collect(),
        ip: ip.unwrap_or_default().chars().take(64).collect(),
    }
}

/// Requests that may carry the gateway's report of the client.
trait HasClient {
    fn client(&self) -> Option<&pb::ClientInfo>;
}

impl HasClient for pb::RegisterRequest {
    fn client(&self) -> Option<&pb::ClientInfo> {
        self.client.as_ref()
    }
}

impl HasClient for pb::LoginRequest {
    fn client(&self) -> Option<&pb::ClientInfo> {
        self.client.as_ref()
    }
}

fn user_message(user: &UserRow) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        username: user.username.clone(),
        bio: user.bio.clone(),
        image: user.image.clone(),
        role: role_of(user).to_proto().into(),
        banned: user.banned_at.is_some(),
        created_at: Some(to_proto(user.created_at)),
        updated_at: Some(to_proto(user.updated_at)),
    }
}

fn profile_message(user: &UserRow) -> pb::Profile {
    pb::Profile {
        id: user.id.to_string(),
        username: user.username.clone(),
        bio: user.bio.clone(),
        image: user.image.clone(),
        banned: user.banned_at.is_some(),
    }
}

fn session_message(session: &SessionRow, current: Uuid) -> pb::Session {
    pb::Session {
        id: session.id.to_string(),
        user_agent: session.user_agent.clone(),
        ip: session.ip.clone(),
        created_at: Some(to_proto(session.created_at)),
        last_used_at: Some(to_proto(session.last_used_at)),
        expires_at: Some(to_proto(session.expires_at)),
        current: session.id == current,
    }
}

fn auth_response(user: &UserRow, credentials: Credentials) -> pb::AuthResponse {
    pb::AuthResponse {
        user: Some(user_message(user)),
        tokens: Some(pb::Tokens {
            access_token: credentials.access.token,
            access_token_expires_at: Some(to_proto(credentials.access.expires_at)),
            refresh_token: credentials.refresh_token,
            refresh_token_expires_at: Some(to_proto(credentials.refresh_expires_at)),
            session_id: credentials.session_id.to_string(),
            session_token: credentials.session.token,
            session_token_expires_at: Some(to_proto(credentials.session.expires_at)),
        }),
    }
}
