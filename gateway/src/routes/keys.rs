//! `/.well-known/jwks.json`: the keys Quill's tokens are signed with, as a
//! JSON Web Key Set (RFC 7517, Ed25519 keys as RFC 8037 has them), for
//! systems outside Quill that verify its tokens (an API gateway, a
//! sidecar). Quill's own processes ask auth's `GetPublicKeys`.
//!
//! A signature says nothing of revocation: a verifier that only checks it
//! should accept access tokens alone (audience `quill`), never session
//! tokens (`quill:session`), which live for days.

use axum::{
    Json,
    http::{HeaderValue, header},
    response::IntoResponse,
};
use quill_proto::auth::v1::GetPublicKeysRequest;
use serde::Serialize;

use crate::{
    calls::Calls,
    error::ApiError,
    route_table::{RouteTable, get},
};

/// Verifiers may keep the set this long: a new key is published at least
/// this long before it signs (README, "Key rotation").
const CACHE: HeaderValue = HeaderValue::from_static("public, max-age=300");

pub fn routes() -> RouteTable {
    RouteTable::default().route("/.well-known/jwks.json", get(jwks))
}

#[derive(Serialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Serialize)]
struct Jwk {
    kty: &'static str,
    crv: &'static str,
    alg: &'static str,
    #[serde(rename = "use")]
    usage: &'static str,
    kid: String,
    x: String,
}

async fn jwks(calls: Calls) -> Result<impl IntoResponse, ApiError> {
    let published = calls
        .auth(None)
        .get_public_keys(GetPublicKeysRequest {})
        .await?
        .into_inner();
    let keys = published
        .keys
        .into_iter()
        .filter(|key| key.algorithm == "EdDSA" && !key.jwk_x.is_empty())
        .map(|key| Jwk {
            kty: "OKP",
            crv: "Ed25519",
            alg: "EdDSA",
            usage: "sig",
            kid: key.kid,
            x: key.jwk_x,
        })
        .collect();
    Ok(([(header::CACHE_CONTROL, CACHE)], Json(JwkSet { keys })))
}
