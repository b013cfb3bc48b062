//! Tags: RealWorld's `/tags`.

use axum::{Json, response::Response};
use quill_proto::content::v1 as pb;
use serde::Deserialize;

use crate::{
    bodies::articles::TagsBody,
    calls::Calls,
    conditional::IfNoneMatch,
    error::ApiError,
    extract::ApiQuery,
    route_table::{RouteTable, get},
    versions::Tag,
};

pub fn routes() -> RouteTable {
    RouteTable::default().route("/api/tags", get(list_tags))
}

/// `limit`: how many of the most used tags (default 20, at most 1,000).
#[derive(Deserialize)]
struct TagsQuery {
    limit: Option<String>,
}

async fn list_tags(
    calls: Calls,
    if_none_match: IfNoneMatch,
    ApiQuery(query): ApiQuery<TagsQuery>,
) -> Result<Response, ApiError> {
    let limit = super::articles::count("limit", query.limit)?;
    let tags = calls
        .content(None)
        .list_tags(pb::ListTagsRequest { limit })
        .await?
        .into_inner();
    if_none_match.answer(Tag::of("tags", &tags), || Ok(Json(TagsBody::from(tags))))
}
