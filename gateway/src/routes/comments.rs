//! Comments on an article: RealWorld's `/articles/{slug}/comments`.

use axum::{
    Json,
    extract::Path,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use quill_proto::content::v1 as pb;
use serde::Deserialize;

use super::articles::{Page, PageQuery};
use crate::{
    bodies::articles::{CommentBody, CommentsBody},
    calls::Calls,
    conditional::IfNoneMatch,
    error::ApiError,
    extract::{ApiJson, ApiQuery, AuthUser},
    route_table::{RouteTable, delete, get},
    versions::Tag,
};

pub fn routes() -> RouteTable {
    RouteTable::default()
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
    calls: Calls,
    user: Option<AuthUser>,
    if_none_match: IfNoneMatch,
    Path(slug): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let page = Page::from_query(query)?;
    let list = calls
        .content(user.as_ref())
        .list_comments(pb::ListCommentsRequest {
            slug,
            limit: page.limit,
            offset: page.offset,
            cursor: page.cursor,
        })
        .await?
        .into_inner();
    if_none_match.answer(Tag::of("comments", &list), || {
        Ok(Json(CommentsBody::try_from(list)?))
    })
}

/// 200, not 201: RealWorld's specification says so for this one creation.
async fn add_comment(
    calls: Calls,
    user: AuthUser,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<Envelope<NewComment>>,
) -> Result<impl IntoResponse, ApiError> {
    let added = calls
        .content(Some(&user))
        .add_comment(pb::AddCommentRequest {
            slug,
            body: body.comment.body,
        })
        .await?
        .into_inner();
    Ok(Json(CommentBody::try_from(added)?))
}

/// The content service lets the comment's author delete, and anyone whose
/// role may moderate comments.
async fn delete_comment(
    calls: Calls,
    user: AuthUser,
    Path((slug, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = comment_id(&id)?;
    calls
        .content(Some(&user))
        .delete_comment(pb::DeleteCommentRequest { slug, id })
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
