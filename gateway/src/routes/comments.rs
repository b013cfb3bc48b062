//! Comments on an article: RealWorld's `/articles/{slug}/comments`.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{delete, get},
};
use quill_proto::content::v1 as pb;
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    json::comment,
    rpc::Rpc,
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/articles/{slug}/comments",
            get(list_comments).post(add_comment),
        )
        .route("/api/articles/{slug}/comments/{id}", delete(delete_comment))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    comment: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    body: String,
}

/// A path segment that is not a comment id names no comment: 404, the same
/// answer as for an id that does not exist, so clients need one branch.
fn comment_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("comment"))
}

async fn list_comments(
    State(state): State<AppState>,
    rpc: Rpc,
    user: Option<AuthUser>,
    Path(slug): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let comments = state
        .upstreams
        .content()
        .list_comments(rpc.maybe_authed(pb::ListCommentsRequest { slug }, user.as_ref()))
        .await?
        .into_inner()
        .comments
        .into_iter()
        .map(comment)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "comments": comments })))
}

/// 200, not 201: RealWorld's specification says so for this one creation.
async fn add_comment(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<Envelope<NewComment>>,
) -> Result<impl IntoResponse, ApiError> {
    let added = state
        .upstreams
        .content()
        .add_comment(rpc.authed(
            pb::AddCommentRequest {
                slug,
                body: body.comment.body,
            },
            &user,
        ))
        .await?
        .into_inner();
    Ok(Json(json!({ "comment": comment(added)? })))
}

/// The content service lets the comment's author delete, and anyone whose
/// role may moderate comments.
async fn delete_comment(
    State(state): State<AppState>,
    rpc: Rpc,
    user: AuthUser,
    Path((slug, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = comment_id(&id)?;
    state
        .upstreams
        .content()
        .delete_comment(rpc.authed(pb::DeleteCommentRequest { slug, id }, &user))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numeric_id_is_parsed() {
        assert_eq!(comment_id("42").unwrap(), 42);
    }

    #[test]
    fn a_non_numeric_id_names_no_comment() {
        for id in ["abc", "1.5", "", "99999999999999999999"] {
            assert_eq!(comment_id(id).unwrap_err().status().as_u16(), 404, "{id}");
        }
    }
}
