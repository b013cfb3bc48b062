//! Accounts: RealWorld's `/users`, `/users/login`, `/user`, and our
//! extensions for refresh tokens and sessions.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{delete, get, post},
};
use quill_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser, ClientIp, user_agent},
    json::timestamp,
    rpc::Rpc,
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(register))
        .route("/api/users/login", post(login))
        .route("/api/users/refresh", post(refresh))
        .route("/api/users/logout", post(logout))
        .route("/api/users/logout-all", post(logout_all))
        .route("/api/user", get(current_user).put(update_user))
        .route("/api/user/sessions", get(sessions))
        .route("/api/user/sessions/{id}", delete(revoke_session))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<T> {
    user: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginUser {
    email: String,
    password: String,
}

/// Front ends post back the whole user object they were given, so fields we
/// hand out (`token`, `refreshToken`) are accepted and ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateUser {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// `null` clears, like an empty string.
    #[serde(default, deserialize_with = "present_or_null")]
    bio: Option<Option<String>>,
    #[serde(default, deserialize_with = "present_or_null")]
    image: Option<Option<String>>,
    /// Our extension: proof for an email or password change (otherwise a
    /// password login within the last few minutes is needed).
    current_password: Option<String>,
    #[serde(rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
    #[serde(rename = "refreshToken")]
    _refresh_token: Option<serde::de::IgnoredAny>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RefreshBody {
    refresh_token: String,
}

/// RealWorld's user object, plus our `refreshToken` when one was issued.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    email: String,
    token: String,
    username: String,
    bio: Option<String>,
    image: Option<String>,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

fn user_body(
    user: pb::User,
    token: String,
    refresh_token: Option<String>,
) -> Json<serde_json::Value> {
    Json(json!({ "user": UserBody {
        email: user.email,
        token,
        username: user.username,
        bio: user.bio,
        image: user.image,
        role: role_name(user.role),
        refresh_token,
    }}))
}

pub fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Viewer) => "viewer",
        Ok(pb::Role::Creator) => "creator",
        Ok(pb::Role::Admin) => "admin",
        _ => "unknown",
    }
}

fn authenticated(response: pb::AuthResponse) -> Result<Json<serde_json::Value>, ApiError> {
    let (Some(user), Some(tokens)) = (response.user, response.tokens) else {
        return Err(ApiError::from(tonic::Status::internal(
            "incomplete auth response",
        )));
    };
    Ok(user_body(
        user,
        tokens.access_token,
        Some(tokens.refresh_token),
    ))
}

fn client_info(headers: &HeaderMap, ip: ClientIp) -> Option<pb::ClientInfo> {
    Some(pb::ClientInfo {
        user_agent: user_agent(headers),
        ip: ip.0.to_string(),
    })
}

async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    rpc: Rpc,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Envelope<NewUser>>,
) -> Result<impl IntoResponse, ApiError> {
    let user = body.user;
    let response = state
        .upstreams
        .auth()
        .register(rpc.request(pb::RegisterRequest {
            email: user.email,
            username: user.username,
            password: user.password,
            client: client_info(&headers, ip),
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, authenticated(response)?))
}

async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    rpc: Rpc,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Envelope<LoginUser>>,
) -> Result<impl IntoResponse, ApiError> {
    // Rate limits live in auth, so they hold for direct gRPC callers too;
    // the client address forwarded here is trusted because the call proves
    // it comes from the gateway.
    let user = body.user;
    let response = state
        .upstreams
        .auth()
        .login(rpc.request(pb::LoginRequest {
            email: user.email,
            password: user.password,
            client: client_info(&headers, ip),
        }))
        .await?
        .into_inner();
    authenticated(response)
}

async fn refresh(
    State(state): State<AppState>,
    rpc: Rpc,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<impl IntoResponse, ApiError> {
    let response = state
        .upstreams
        .auth()
        .refresh(rpc.request(pb::RefreshRequest {
            refresh_token: body.refresh_token,
        }))
        .await?
        .into_inner();
    authenticated(response)
}

async fn current_user(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let current = state
        .upstreams
        .auth()
        .get_current_user(rpc.authed(pb::GetCurrentUserRequest {}, &user))
        .await?
        .into_inner();
    Ok(user_body(current, user.token, None))
}

async fn update_user(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    ApiJson(body): ApiJson<Envelope<UpdateUser>>,
) -> Result<impl IntoResponse, ApiError> {
    let changes = body.user;
    let updated = state
        .upstreams
        .auth()
        .update_user(rpc.authed(
            pb::UpdateUserRequest {
                email: changes.email,
                username: changes.username,
                password: changes.password,
                bio: changes.bio.map(Option::unwrap_or_default),
                image: changes.image.map(Option::unwrap_or_default),
                current_password: changes.current_password,
            },
            &user,
        ))
        .await?
        .into_inner();
    Ok(user_body(updated, user.token, None))
}

async fn logout(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    state
        .upstreams
        .auth()
        .logout(rpc.authed(pb::LogoutRequest {}, &user))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_all(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let revoked = state
        .upstreams
        .auth()
        .logout_all(rpc.authed(pb::LogoutAllRequest {}, &user))
        .await?
        .into_inner()
        .revoked_sessions;
    Ok(Json(json!({ "revokedSessions": revoked })))
}

async fn sessions(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let sessions = state
        .upstreams
        .auth()
        .list_sessions(rpc.authed(pb::ListSessionsRequest {}, &user))
        .await?
        .into_inner()
        .sessions;
    let sessions: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "userAgent": s.user_agent,
                "ip": s.ip,
                "createdAt": timestamp(s.created_at.as_ref()),
                "lastUsedAt": timestamp(s.last_used_at.as_ref()),
                "expiresAt": timestamp(s.expires_at.as_ref()),
                "current": s.current,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

async fn revoke_session(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state
        .upstreams
        .auth()
        .revoke_session(rpc.authed(pb::RevokeSessionRequest { session_id: id }, &user))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
