//! Administration of users (permission `user:manage`, enforced by auth).

use axum::{Json, extract::Path, response::IntoResponse};
use quill_proto::auth::v1 as pb;
use serde::Deserialize;

use crate::{
    bodies::accounts::{AdminUserBody, AdminUsersBody},
    calls::Calls,
    error::ApiError,
    extract::{ApiJson, ApiQuery, AuthUser},
    route_table::{RouteTable, get, post, put},
};

pub fn routes() -> RouteTable {
    RouteTable::default()
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

async fn list_users(
    calls: Calls,
    user: AuthUser,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let page = calls
        .auth(Some(&user))
        .list_users(pb::ListUsersRequest {
            query: query.q,
            limit: query.limit.unwrap_or(20),
            offset: query.offset.unwrap_or(0),
        })
        .await?
        .into_inner();
    Ok(Json(AdminUsersBody::from(page)))
}

async fn set_role(
    calls: Calls,
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
    let updated = calls
        .auth(Some(&user))
        .set_user_role(pb::SetUserRoleRequest {
            username,
            role: role.into(),
        })
        .await?
        .into_inner();
    Ok(Json(AdminUserBody::from(updated)))
}

async fn ban(
    calls: Calls,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let banned = calls
        .auth(Some(&user))
        .ban_user(pb::BanUserRequest { username })
        .await?
        .into_inner();
    super::users::refresh_author(&calls, &user, &banned.id).await;
    Ok(Json(AdminUserBody::from(banned)))
}

async fn unban(
    calls: Calls,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let unbanned = calls
        .auth(Some(&user))
        .unban_user(pb::UnbanUserRequest { username })
        .await?
        .into_inner();
    super::users::refresh_author(&calls, &user, &unbanned.id).await;
    Ok(Json(AdminUserBody::from(unbanned)))
}
