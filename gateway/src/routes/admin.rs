//! Administration of users (permission `user:manage`, enforced by auth).

use axum::{
    Json, Router,
    extract::{Path, State},
    response::IntoResponse,
    routing::{get, post, put},
};
use quill_proto::auth::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::ApiError,
    extract::{ApiJson, ApiQuery, AuthUser},
    json::timestamp,
    routes::users::role_name,
    rpc::Rpc,
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/users", get(list_users))
        .route("/api/admin/users/{username}/role", put(set_role))
        .route("/api/admin/users/{username}/ban", post(ban).delete(unban))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
}

fn admin_user(user: pb::User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "bio": user.bio,
        "image": user.image,
        "role": role_name(user.role),
        "banned": user.banned,
        "createdAt": timestamp(user.created_at.as_ref()),
        "updatedAt": timestamp(user.updated_at.as_ref()),
    })
}

async fn list_users(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let page = state
        .upstreams
        .auth()
        .list_users(rpc.authed(
            pb::ListUsersRequest {
                query: query.q,
                limit: query.limit.unwrap_or(20),
                offset: query.offset.unwrap_or(0),
            },
            &user,
        ))
        .await?
        .into_inner();
    let users: Vec<Value> = page.users.into_iter().map(admin_user).collect();
    Ok(Json(json!({ "users": users, "usersCount": page.total })))
}

async fn set_role(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<impl IntoResponse, ApiError> {
    let role = match body.role.as_str() {
        "viewer" => pb::Role::Viewer,
        "creator" => pb::Role::Creator,
        "admin" => pb::Role::Admin,
        _ => {
            return Err(ApiError::validation(
                "role",
                "must be viewer, creator or admin",
            ));
        }
    };
    let updated = state
        .upstreams
        .auth()
        .set_user_role(rpc.authed(
            pb::SetUserRoleRequest {
                username,
                role: role.into(),
            },
            &user,
        ))
        .await?
        .into_inner();
    Ok(Json(json!({ "user": admin_user(updated) })))
}

async fn ban(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let banned = state
        .upstreams
        .auth()
        .ban_user(rpc.authed(pb::BanUserRequest { username }, &user))
        .await?
        .into_inner();
    Ok(Json(json!({ "user": admin_user(banned) })))
}

async fn unban(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let unbanned = state
        .upstreams
        .auth()
        .unban_user(rpc.authed(pb::UnbanUserRequest { username }, &user))
        .await?
        .into_inner();
    Ok(Json(json!({ "user": admin_user(unbanned) })))
}
