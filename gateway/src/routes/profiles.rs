//! Profiles and follows: RealWorld's `/profiles/{username}`.

use axum::{
    Json,
    extract::Path,
    response::{IntoResponse, Response},
};
use quill_proto::content::v1 as pb;

use crate::{
    bodies::articles::ProfileBody,
    calls::Calls,
    conditional::IfNoneMatch,
    error::ApiError,
    extract::AuthUser,
    route_table::{RouteTable, get, post},
    versions::Tag,
};

// Follow and unfollow read no body: the Postman suite posts one anyway, and
// a route without a documented body ignores whatever it is sent.
pub fn routes() -> RouteTable {
    RouteTable::default()
        .route("/api/profiles/{username}", get(get_profile))
        .route(
            "/api/profiles/{username}/follow",
            post(follow).delete(unfollow),
        )
}

async fn get_profile(
    calls: Calls,
    user: Option<AuthUser>,
    if_none_match: IfNoneMatch,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let found = calls
        .content(user.as_ref())
        .get_profile(pb::GetProfileRequest { username })
        .await?
        .into_inner();
    if_none_match.answer(Tag::of("profile", &found), || {
        Ok(Json(ProfileBody::from(found)))
    })
}

async fn follow(
    calls: Calls,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let followed = calls
        .content(Some(&user))
        .follow(pb::FollowRequest { username })
        .await?
        .into_inner();
    Ok(Json(ProfileBody::from(followed)))
}

async fn unfollow(
    calls: Calls,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let unfollowed = calls
        .content(Some(&user))
        .unfollow(pb::UnfollowRequest { username })
        .await?
        .into_inner();
    Ok(Json(ProfileBody::from(unfollowed)))
}
