//! Accounts: RealWorld's user (with its token), and our sessions and the
//! administration view of users.

use quill_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use super::timestamp;
use crate::error::ApiError;

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Viewer) => "viewer",
        Ok(pb::Role::Creator) => "creator",
        Ok(pb::Role::Admin) => "admin",
        _ => "unknown",
    }
}

/// RealWorld's user object, plus our `role`, and `accessToken` with
/// `refreshToken` when they were issued. RealWorld's `token` is the session
/// token: stock front ends never refresh, so it lives as long as the
/// session, and every request checks the session is live (see README,
/// "Tokens").
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    bio: Option<String>,
    email: String,
    #[serde(serialize_with = "crate::avatar::serialize")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    role: &'static str,
    token: String,
    username: String,
}

/// `{"user": ...}`
#[derive(Serialize)]
pub struct UserBody {
    user: User,
}

/// What `GET /api/user` shows of auth's user, as the gateway caches it
/// ([`quill_platform::account_cache`]).
#[derive(Serialize, Deserialize)]
pub struct Account {
    bio: Option<String>,
    email: String,
    image: Option<String>,
    role: i32,
    username: String,
}

impl From<pb::User> for Account {
    fn from(user: pb::User) -> Self {
        Self {
            bio: user.bio,
            email: user.email,
            image: user.image,
            role: user.role,
            username: user.username,
        }
    }
}

impl UserBody {
    /// The caller, who presented `token` (no new tokens are issued).
    pub fn current(user: impl Into<Account>, token: String) -> Self {
        Self::new(user.into(), token, None)
    }

    /// `issued`: the access and refresh tokens of a new credential set.
    fn new(user: Account, token: String, issued: Option<(String, String)>) -> Self {
        let (access_token, refresh_token) = issued.unzip();
        Self {
            user: User {
                access_token,
                bio: user.bio,
                email: user.email,
                image: user.image,
                refresh_token,
                role: role_name(user.role),
                token,
                username: user.username,
            },
        }
    }
}

/// A registration, login or refresh: the user and their new tokens.
impl TryFrom<pb::AuthResponse> for UserBody {
    type Error = ApiError;

    fn try_from(response: pb::AuthResponse) -> Result<Self, ApiError> {
        let (Some(user), Some(tokens)) = (response.user, response.tokens) else {
            return Err(incomplete());
        };
        if tokens.session_token.is_empty() {
            return Err(incomplete());
        }
        Ok(Self::new(
            user.into(),
            tokens.session_token,
            Some((tokens.access_token, tokens.refresh_token)),
        ))
    }
}

fn incomplete() -> ApiError {
    ApiError::from(tonic::Status::internal("incomplete auth response"))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    created_at: String,
    current: bool,
    expires_at: String,
    id: String,
    ip: String,
    last_used_at: String,
    user_agent: String,
}

impl From<pb::Session> for Session {
    fn from(session: pb::Session) -> Self {
        Self {
            created_at: timestamp(session.created_at.as_ref()),
            current: session.current,
            expires_at: timestamp(session.expires_at.as_ref()),
            id: session.id,
            ip: session.ip,
            last_used_at: timestamp(session.last_used_at.as_ref()),
            user_agent: session.user_agent,
        }
    }
}

/// `{"sessions": [...]}`
#[derive(Serialize)]
pub struct SessionsBody {
    sessions: Vec<Session>,
}

impl From<pb::ListSessionsResponse> for SessionsBody {
    fn from(list: pb::ListSessionsResponse) -> Self {
        Self {
            sessions: list.sessions.into_iter().map(Session::from).collect(),
        }
    }
}

/// How many sessions a logout from everywhere ended.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedSessionsBody {
    revoked_sessions: u32,
}

impl From<pb::LogoutAllResponse> for RevokedSessionsBody {
    fn from(response: pb::LogoutAllResponse) -> Self {
        Self {
            revoked_sessions: response.revoked_sessions,
        }
    }
}

/// A user as administrators see them: with id, email, role and ban, and
/// without a token.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminUser {
    banned: bool,
    bio: Option<String>,
    created_at: String,
    email: String,
    id: String,
    image: Option<String>,
    role: &'static str,
    updated_at: String,
    username: String,
}

impl From<pb::User> for AdminUser {
    fn from(user: pb::User) -> Self {
        Self {
            banned: user.banned,
            bio: user.bio,
            created_at: timestamp(user.created_at.as_ref()),
            email: user.email,
            id: user.id,
            image: user.image,
            role: role_name(user.role),
            updated_at: timestamp(user.updated_at.as_ref()),
            username: user.username,
        }
    }
}

/// `{"user": ...}` for administrators.
#[derive(Serialize)]
pub struct AdminUserBody {
    user: AdminUser,
}

impl From<pb::User> for AdminUserBody {
    fn from(user: pb::User) -> Self {
        Self { user: user.into() }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminUsersBody {
    users: Vec<AdminUser>,
    users_count: u64,
}

impl From<pb::ListUsersResponse> for AdminUsersBody {
    fn from(page: pb::ListUsersResponse) -> Self {
        Self {
            users: page.users.into_iter().map(AdminUser::from).collect(),
            users_count: page.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bodies::testing::{assert_sent_as, at};

    fn jake() -> pb::User {
        pb::User {
            id: "0190a5e0-0000-7000-8000-000000000001".into(),
            email: "jake@jake.jake".into(),
            username: "jake".into(),
            bio: Some("I work at statefarm".into()),
            image: None,
            role: pb::Role::Creator.into(),
            banned: false,
            created_at: at(1_767_323_045, 678_000_000),
            updated_at: at(1_767_323_046, 0),
        }
    }

    #[test]
    fn a_login_returns_the_session_token_as_realworlds_token_and_the_others_beside() {
        let body = UserBody::try_from(pb::AuthResponse {
            user: Some(jake()),
            tokens: Some(pb::Tokens {
                access_token: "access".into(),
                refresh_token: "refresh".into(),
                session_token: "session".into(),
                ..pb::Tokens::default()
            }),
        })
        .unwrap();
        assert_sent_as(
            &body,
            &json!({ "user": {
                "email": "jake@jake.jake",
                "token": "session",
                "accessToken": "access",
                "username": "jake",
                "bio": "I work at statefarm",
                "image": null,
                "role": "creator",
                "refreshToken": "refresh",
            }}),
        );
    }

    #[test]
    fn the_current_user_has_no_refresh_token() {
        assert_sent_as(
            &UserBody::current(jake(), "jwt".into()),
            &json!({ "user": {
                "email": "jake@jake.jake",
                "token": "jwt",
                "username": "jake",
                "bio": "I work at statefarm",
                "image": null,
                "role": "creator",
            }}),
        );
    }

    #[test]
    fn an_auth_response_without_tokens_is_a_server_error() {
        for tokens in [
            None,
            Some(pb::Tokens {
                access_token: "access".into(),
                ..pb::Tokens::default()
            }),
        ] {
            let response = pb::AuthResponse {
                user: Some(jake()),
                tokens,
            };
            let Err(error) = UserBody::try_from(response) else {
                panic!("an auth response without a session token converted");
            };
            assert_eq!(error.status().as_u16(), 500);
        }
    }

    #[test]
    fn sessions_say_which_one_is_current() {
        let body = SessionsBody::from(pb::ListSessionsResponse {
            sessions: vec![pb::Session {
                id: "s1".into(),
                user_agent: "curl/8".into(),
                ip: "203.0.113.7".into(),
                created_at: at(1_767_323_045, 678_000_000),
                last_used_at: at(1_767_323_046, 0),
                expires_at: at(1_767_323_047, 0),
                current: true,
            }],
        });
        assert_sent_as(
            &body,
            &json!({ "sessions": [{
                "id": "s1",
                "userAgent": "curl/8",
                "ip": "203.0.113.7",
                "createdAt": "2026-01-02T03:04:05.678Z",
                "lastUsedAt": "2026-01-02T03:04:06.000Z",
                "expiresAt": "2026-01-02T03:04:07.000Z",
                "current": true,
            }]}),
        );
        assert_sent_as(
            &RevokedSessionsBody::from(pb::LogoutAllResponse {
                revoked_sessions: 3,
            }),
            &json!({ "revokedSessions": 3 }),
        );
    }

    #[test]
    fn administrators_see_id_role_and_ban() {
        let admin_json = json!({
            "id": "0190a5e0-0000-7000-8000-000000000001",
            "email": "jake@jake.jake",
            "username": "jake",
            "bio": "I work at statefarm",
            "image": null,
            "role": "creator",
            "banned": false,
            "createdAt": "2026-01-02T03:04:05.678Z",
            "updatedAt": "2026-01-02T03:04:06.000Z",
        });
        assert_sent_as(&AdminUserBody::from(jake()), &json!({ "user": admin_json }));
        let page = AdminUsersBody::from(pb::ListUsersResponse {
            users: vec![jake()],
            total: 21,
        });
        assert_sent_as(&page, &json!({ "users": [admin_json], "usersCount": 21 }));
    }

    #[test]
    fn an_unknown_role_is_named_unknown() {
        assert_eq!(role_name(pb::Role::Admin.into()), "admin");
        assert_eq!(role_name(99), "unknown");
    }
}
