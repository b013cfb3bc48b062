//! The default avatar (`GATEWAY_DEFAULT_AVATAR_URL`): what a user without
//! an image shows as `image` on the REST surface. It is presentation only:
//! auth and content keep storing "no image", so a changed default reaches
//! every user at once and gRPC callers still see the truth.
//!
//! The setting is scoped to each request by a middleware and read where an
//! image is serialized, instead of being threaded through every body
//! conversion that contains a user or a profile (articles, comments,
//! profiles, the user itself).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use serde::Serializer;

use crate::state::AppState;

tokio::task_local! {
    static DEFAULT_AVATAR: Option<Arc<str>>;
}

/// Makes the setting visible to the bodies this request renders.
pub async fn scope(State(state): State<AppState>, request: Request, next: Next) -> Response {
    DEFAULT_AVATAR
        .scope(state.default_avatar.clone(), next.run(request))
        .await
}

/// The default for this request: part of what an answer's tag covers.
pub(crate) fn default_avatar() -> Option<Arc<str>> {
    DEFAULT_AVATAR.try_with(Clone::clone).ok().flatten()
}

/// `serialize_with` for an `image`: the user's own, else the default, else
/// `null`.
pub fn serialize<S: Serializer>(image: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    match (image, default_avatar()) {
        (Some(own), _) => serializer.serialize_str(own),
        (None, Some(default)) => serializer.serialize_str(&default),
        (None, None) => serializer.serialize_none(),
    }
}

/// Front ends post back the user they were shown: the default image posted
/// back is "no image of my own", or the default would be stored as the
/// user's and stop following the setting.
pub fn posted_back(image: Option<Option<String>>) -> Option<Option<String>> {
    match (image, default_avatar()) {
        // Trimmed as auth trims what it stores.
        (Some(Some(url)), Some(default)) if url.trim() == &*default => Some(None),
        (image, _) => image,
    }
}
