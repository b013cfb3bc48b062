//! Accounts: RealWorld's `/users`, `/users/login`, `/user`, and our
//! extensions for refresh tokens and sessions.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use quill_platform::account_cache;
use quill_proto::auth::v1 as pb;
use serde::Deserialize;

use crate::{
    avatar,
    bodies::accounts::{Account, RevokedSessionsBody, SessionsBody, UserBody},
    calls::Calls,
    error::ApiError,
    extract::{ApiJson, AuthUser, AuthUserAccount, ClientIp, user_agent},
    route_table::{RouteTable, delete, get, post},
    state::AppState,
};

pub fn routes() -> RouteTable {
    RouteTable::default()
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
/// hand out (`token`, `refreshToken`, `role`) are accepted and ignored (a
/// role changes only through administration).
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
    #[serde(rename = "role")]
    _role: Option<serde::de::IgnoredAny>,
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

fn client_info(headers: &HeaderMap, ip: ClientIp) -> Option<pb::ClientInfo> {
    Some(pb::ClientInfo {
        user_agent: user_agent(headers),
        ip: ip.0.to_string(),
    })
}

async fn register(
    calls: Calls,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Envelope<NewUser>>,
) -> Result<impl IntoResponse, ApiError> {
    let user = body.user;
    let response = calls
        .auth(None)
        .register(pb::RegisterRequest {
            email: user.email,
            username: user.username,
            password: user.password,
            client: client_info(&headers, ip),
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(UserBody::try_from(response)?)))
}

async fn login(
    calls: Calls,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Envelope<LoginUser>>,
) -> Result<impl IntoResponse, ApiError> {
    // Rate limits live in auth, so they hold for direct gRPC callers too;
    // the client address forwarded here is trusted because the call proves
    // it comes from the gateway.
    let user = body.user;
    let response = calls
        .auth(None)
        .login(pb::LoginRequest {
            email: user.email,
            password: user.password,
            client: client_info(&headers, ip),
        })
        .await?
        .into_inner();
    Ok(Json(UserBody::try_from(response)?))
}

async fn refresh(
    calls: Calls,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<impl IntoResponse, ApiError> {
    let response = calls
        .auth(None)
        .refresh(pb::RefreshRequest {
            refresh_token: body.refresh_token,
        })
        .await?
        .into_inner();
    Ok(Json(UserBody::try_from(response)?))
}

/// Every signed-in page load asks this: answered from the cache of
/// accounts, which the session check has read already, and from auth only
/// on a miss.
async fn current_user(
    calls: Calls,
    State(state): State<AppState>,
    AuthUserAccount { user, found }: AuthUserAccount,
) -> Result<impl IntoResponse, ApiError> {
    // The caller's session is the token's, checked: the same user the
    // keys read along it were named for.
    let (key, depends_on) = account_cache::entry(user.caller.user);
    let account: Account = state
        .accounts
        .get_or_load_found("account", &key, &depends_on, found, || async {
            let current = calls
                .auth(Some(&user))
                .get_current_user(pb::GetCurrentUserRequest {})
                .await?
                .into_inner();
            Ok::<_, ApiError>(Account::from(current))
        })
        .await?;
    Ok(Json(UserBody::current(account, user.token)))
}

async fn update_user(
    calls: Calls,
    user: AuthUser,
    ApiJson(body): ApiJson<Envelope<UpdateUser>>,
) -> Result<impl IntoResponse, ApiError> {
    let changes = body.user;
    let updated = calls
        .auth(Some(&user))
        .update_user(pb::UpdateUserRequest {
            email: changes.email,
            username: changes.username,
            password: changes.password,
            bio: changes.bio.map(Option::unwrap_or_default),
            image: avatar::posted_back(changes.image).map(Option::unwrap_or_default),
            current_password: changes.current_password,
        })
        .await?
        .into_inner();
    refresh_author(&calls, &user, &updated.id).await;
    Ok(Json(UserBody::current(updated, user.token)))
}

/// Read-your-writes across services: content shows profiles from its copy
/// of auth's data, which the `user.*` event updates a moment after auth
/// answers. Before a change in auth is answered, content copies it, so the
/// client's next read (a profile, an article's author) shows it. The change
/// has happened whatever this call's fate: if content cannot be reached, the
/// answer still goes out and the event brings the copy up to date.
pub(super) async fn refresh_author(calls: &Calls, actor: &AuthUser, user_id: &str) {
    let refreshed = calls
        .content(Some(actor))
        .refresh_author(quill_proto::content::v1::RefreshAuthorRequest {
            user_id: user_id.to_owned(),
        })
        .await;
    if let Err(status) = refreshed {
        tracing::warn!(
            code = ?status.code(),
            message = status.message(),
            "content's copy of a changed user was not refreshed; the event will bring it"
        );
    }
}

async fn logout(calls: Calls, user: AuthUser) -> Result<impl IntoResponse, ApiError> {
    calls.auth(Some(&user)).logout(pb::LogoutRequest {}).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_all(calls: Calls, user: AuthUser) -> Result<impl IntoResponse, ApiError> {
    let revoked = calls
        .auth(Some(&user))
        .logout_all(pb::LogoutAllRequest {})
        .await?
        .into_inner();
    Ok(Json(RevokedSessionsBody::from(revoked)))
}

async fn sessions(calls: Calls, user: AuthUser) -> Result<impl IntoResponse, ApiError> {
    let sessions = calls
        .auth(Some(&user))
        .list_sessions(pb::ListSessionsRequest {})
        .await?
        .into_inner();
    Ok(Json(SessionsBody::from(sessions)))
}

async fn revoke_session(
    calls: Calls,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    calls
        .auth(Some(&user))
        .revoke_session(pb::RevokeSessionRequest { session_id: id })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
