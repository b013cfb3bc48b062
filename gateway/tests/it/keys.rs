//! `/.well-known/jwks.json`: what a verifier outside Quill needs, and key
//! rotation: a published key verifies before (or after) it signs.

use ed25519_dalek::{
    SigningKey,
    pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, jwk::JwkSet,
};
use quill_auth::{testing::claims_of, tokens::PublishedKey};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::TestGateway;

#[tokio::test]
async fn a_verifier_outside_quill_checks_access_tokens_with_the_jwks() {
    let gw = TestGateway::start().await;
    let jake = gw.register("jake").await;

    let response = gw
        .http
        .get(gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let set: JwkSet = response.json().await.expect("a JWK set");
    assert_eq!(set.keys.len(), 1);

    let kid = jsonwebtoken::decode_header(&jake.access_token)
        .expect("a header")
        .kid
        .expect("a kid");
    let jwk = set.find(&kid).expect("the signing key is published");
    let key = DecodingKey::from_jwk(jwk).expect("an Ed25519 JWK");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["quill"]);
    validation.set_issuer(&["quill-auth"]);
    let claims = decode::<Value>(&jake.access_token, &key, &validation).expect("verifies");
    assert_eq!(claims.claims["aud"], "quill");
    // A signature-only verifier set to `quill` refuses the long-lived
    // session token: it cannot see a revocation.
    assert!(decode::<Value>(&jake.token, &key, &validation).is_err());
}

#[tokio::test]
async fn a_published_key_that_does_not_sign_here_is_trusted_everywhere() {
    let next = SigningKey::generate(&mut rand::rngs::OsRng);
    let next_public = next
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let published = PublishedKey::parse_all(&next_public).expect("a PEM");
    let gw = TestGateway::setup()
        .auth(|c| c.published_keys = published.clone())
        .start()
        .await;
    let jake = gw.register("jake").await;

    let set: JwkSet = gw
        .http
        .get(gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("a JWK set");
    assert_eq!(set.keys.len(), 2, "the signing key and the next one");
    assert!(set.find(&published[0].kid).is_some());

    // A token the other key signed (as after the switch, or before it on
    // another replica) is good on every door while the key is published.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(published[0].kid.clone());
    let pem = next.to_pkcs8_pem(LineEnding::LF).unwrap();
    let signing = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    let token = encode(&header, &claims_of(&jake.access_token), &signing).unwrap();
    let me = gw.get("/api/user", Some(&token)).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["user"]["username"], "jake");
}
