//! Profiles and follows: RealWorld's `/profiles/{username}`.

use axum::{
    Json, Router,
    extract::{Path, State},
    response::IntoResponse,
    routing::{get, post},
};
use quill_proto::content::v1 as pb;
use serde_json::json;

use crate::{error::ApiError, extract::AuthUser, json::profile, rpc::Rpc, state::AppState};

// Follow and unfollow read no body: the Postman suite posts one anyway, and
// a route without a documented body ignores whatever it is sent.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/profiles/{username}", get(get_profile))
        .route(
            "/api/profiles/{username}/follow",
            post(follow).delete(unfollow),
        )
}

fn profile_body(found: pb::Profile) -> Json<serde_json::Value> {
    Json(json!({ "profile": profile(found) }))
}

async fn get_profile(
    State(state): State<AppState>,
    rpc: Rpc,
    user: Option<AuthUser>,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let found = state
        .upstreams
        .content()
        .get_profile(rpc.maybe_authed(pb::GetProfileRequest { username }, user.as_ref()))
        .await?
        .into_inner();
    Ok(profile_body(found))
}

async fn follow(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let followed = state
        .upstreams
        .content()
        .follow(rpc.authed(pb::FollowRequest { username }, &user))
        .await?
        .into_inner();
    Ok(profile_body(followed))
}

async fn unfollow(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let unfollowed = state
        .upstreams
        .content()
        .unfollow(rpc.authed(pb::UnfollowRequest { username }, &user))
        .await?
        .into_inner();
    Ok(profile_body(unfollowed))
}
