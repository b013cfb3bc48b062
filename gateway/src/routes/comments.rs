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
use serde_json::{Value, json};

use super::articles::{Page, PageQuery};
use crate::{
    error::ApiError,
    extract::{ApiJson, ApiQuery, AuthUser},
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

/// RealWorld's `{"comments": [...]}`, newest first. Our extensions: the
/// `limit`, `offset` and `cursor` parameters, and `nextCursor` only when
/// more comments follow. The default page (100) holds every comment of an
/// ordinary article, as RealWorld clients expect.
async fn list_comments(
    State(state): State<AppState>,
    rpc: Rpc,
    user: Option<AuthUser>,
    Path(slug): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let page = Page::from_query(query)?;
    let request = pb::ListCommentsRequest {
        slug,
        limit: page.limit,
        offset: page.offset,
        cursor: page.cursor,
    };
    let list = state
        .upstreams
        .content()
        .list_comments(rpc.maybe_authed(request, user.as_ref()))
        .await?
        .into_inner();
    comments_body(list)
}

fn comments_body(list: pb::ListCommentsResponse) -> Result<Json<Value>, ApiError> {
    let comments = list
        .comments
        .into_iter()
        .map(comment)
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = json!({ "comments": comments });
    if let Some(cursor) = list.next_cursor {
        body["nextCursor"] = Value::from(cursor);
    }
    Ok(Json(body))
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
    fn next_cursor_appears_only_when_there_is_one() {
        let last = pb::ListCommentsResponse {
            comments: vec![],
            next_cursor: None,
        };
        assert_eq!(comments_body(last).unwrap().0, json!({ "comments": [] }));
        let more = pb::ListCommentsResponse {
            comments: vec![],
            next_cursor: Some("next".into()),
        };
        assert_eq!(
            comments_body(more).unwrap().0,
            json!({ "comments": [], "nextCursor": "next" })
        );
    }

    #[test]
    fn a_non_numeric_id_names_no_comment() {
        for id in ["abc", "1.5", "", "99999999999999999999"] {
            assert_eq!(comment_id(id).unwrap_err().status().as_u16(), 404, "{id}");
        }
    }
}
