//! Tags: RealWorld's `/tags`.

use axum::{Json, response::IntoResponse};
use quill_proto::content::v1 as pb;
use serde::Deserialize;

use crate::{
    bodies::articles::TagsBody,
    calls::Calls,
    error::ApiError,
    extract::ApiQuery,
    route_table::{RouteTable, get},
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
    ApiQuery(query): ApiQuery<TagsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = super::articles::count("limit", query.limit)?;
    let tags = calls
        .content(None)
        .list_tags(pb::ListTagsRequest { limit })
        .await?
        .into_inner();
    Ok(Json(TagsBody::from(tags)))
}
