//! Tags: RealWorld's `/tags`.

use axum::{Json, response::IntoResponse};
use quill_proto::content::v1 as pb;

use crate::{
    bodies::articles::TagsBody,
    calls::Calls,
    error::ApiError,
    route_table::{RouteTable, get},
};

pub fn routes() -> RouteTable {
    RouteTable::default().route("/api/tags", get(list_tags))
}

async fn list_tags(calls: Calls) -> Result<impl IntoResponse, ApiError> {
    let tags = calls
        .content(None)
        .list_tags(pb::ListTagsRequest {})
        .await?
        .into_inner();
    Ok(Json(TagsBody::from(tags)))
}
