//! Tags: RealWorld's `/tags`.

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use quill_proto::content::v1 as pb;
use serde_json::json;

use crate::{error::ApiError, rpc::Rpc, state::AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/tags", get(list_tags))
}

async fn list_tags(State(state): State<AppState>, rpc: Rpc) -> Result<impl IntoResponse, ApiError> {
    let tags = state
        .upstreams
        .content()
        .list_tags(rpc.request(pb::ListTagsRequest {}))
        .await?
        .into_inner()
        .tags;
    Ok(Json(json!({ "tags": tags })))
}
