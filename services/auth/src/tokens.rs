//! Issuing credentials: EdDSA-signed access and session tokens, and opaque
//! refresh tokens.
//!
//! Both signed kinds carry the same claims. An access token lives minutes;
//! a session token lives as long as its session, for clients that cannot
//! refresh (stock RealWorld front ends), and says so in its audience
//! (`<audience>:session`, see [`quill_platform::token::session_audience`]), so
//! a verifier that checks signatures alone refuses it. Quill's own services
//! accept both because they check the session's state on every call.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::{
    SigningKey, VerifyingKey,
    pkcs8::{
        DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey,
        spki::der::pem::LineEnding,
    },
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use quill_platform::{
    authz::Role,
    token::{Claims, session_audience},
};
use rand::{RngCore, rngs::OsRng};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::AuthError;

/// Signs access tokens. Holds the only copy of the private key.
pub struct AccessTokenIssuer {
    encoding_key: EncodingKey,
    kid: String,
    public_key_pem: String,
    /// `x` of the key's JWK: the raw 32-byte public key, base64url.
    jwk_x: String,
    /// Keys published beside the signing one (`AUTH_JWT_PUBLISHED_KEYS`).
    published: Vec<PublishedKey>,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
}

pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
#[error("not a usable Ed25519 PEM key: {0}")]
pub struct KeyError(String);

impl AccessTokenIssuer {
    /// Uses the configured key, or generates one (development only: tokens
    /// then die with the process, and replicas would disagree).
    pub fn new(
        private_key_pem: Option<&str>,
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> Result<Self, KeyError> {
        let signing_key = match private_key_pem {
            Some(pem) => SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError(e.to_string()))?,
            None => {
                tracing::warn!(
                    "AUTH_JWT_PRIVATE_KEY is not set: generated a throwaway signing key; set it in production"
                );
                SigningKey::generate(&mut OsRng)
            }
        };
        let private_pem = signing_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?;
        let public_key_pem = signing_key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?;
        let encoding_key = EncodingKey::from_ed_pem(private_pem.as_bytes())
            .map_err(|e| KeyError(e.to_string()))?;
        let own = PublishedKey::of(&signing_key.verifying_key(), public_key_pem);
        Ok(Self {
            encoding_key,
            kid: own.kid,
            public_key_pem: own.public_key_pem,
            jwk_x: own.jwk_x,
            published: Vec::new(),
            issuer,
            audience,
            ttl,
        })
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Also publishes `keys` (which do not sign here): the next key before
    /// it signs, the previous one until the last token it signed expires.
    pub fn publishing(mut self, keys: Vec<PublishedKey>) -> Self {
        self.published = keys.into_iter().filter(|key| key.kid != self.kid).collect();
        self
    }

    /// Every key a verifier must know: the signing one first.
    pub fn public_keys(&self) -> Vec<PublishedKey> {
        let own = PublishedKey {
            kid: self.kid.clone(),
            public_key_pem: self.public_key_pem.clone(),
            jwk_x: self.jwk_x.clone(),
        };
        std::iter::once(own)
            .chain(self.published.iter().cloned())
            .collect()
    }

    #[cfg(test)]
    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    /// An access token: `ttl` long.
    pub fn issue(&self, user: Uuid, session: Uuid, role: Role) -> Result<IssuedToken, AuthError> {
        let expires_at = Utc::now() + self.ttl;
        self.sign(user, session, role, expires_at, self.audience.clone())
    }

    /// A session token: valid until the session expires.
    pub fn issue_session_token(
        &self,
        user: Uuid,
        session: Uuid,
        role: Role,
        session_expires_at: DateTime<Utc>,
    ) -> Result<IssuedToken, AuthError> {
        let audience = session_audience(&self.audience);
        self.sign(user, session, role, session_expires_at, audience)
    }

    fn sign(
        &self,
        user: Uuid,
        session: Uuid,
        role: Role,
        expires_at: DateTime<Utc>,
        audience: String,
    ) -> Result<IssuedToken, AuthError> {
        let claims = Claims {
            sub: user,
            sid: session,
            role,
            exp: expires_at.timestamp(),
            iat: Utc::now().timestamp(),
            iss: self.issuer.clone(),
            aud: audience,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = encode(&header, &claims, &self.encoding_key)
            .map_err(|e| AuthError::Internal(format!("signing token: {e}")))?;
        Ok(IssuedToken { token, expires_at })
    }
}

/// A public key as verifiers are given it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    /// Derived from the key, so every replica sharing a key announces the
    /// same kid.
    pub kid: String,
    /// SubjectPublicKeyInfo PEM.
    pub public_key_pem: String,
    /// The JWK `x`: the raw public key, base64url.
    pub jwk_x: String,
}

impl PublishedKey {
    fn of(key: &VerifyingKey, public_key_pem: String) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Self {
            kid: URL_SAFE_NO_PAD.encode(&digest[..12]),
            public_key_pem,
            jwk_x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        }
    }

    /// Every `PUBLIC KEY` PEM block in `pems` (Ed25519 only).
    pub fn parse_all(pems: &str) -> Result<Vec<Self>, KeyError> {
        const END: &str = "-----END PUBLIC KEY-----";
        pems.split_inclusive(END)
            .map(str::trim)
            .filter(|block| !block.is_empty())
            .map(|block| {
                let key = VerifyingKey::from_public_key_pem(block)
                    .map_err(|e| KeyError(format!("a published key: {e}")))?;
                let pem = key
                    .to_public_key_pem(LineEnding::LF)
                    .map_err(|e| KeyError(e.to_string()))?;
                Ok(Self::of(&key, pem))
            })
            .collect()
    }
}

/// An opaque refresh token: 256 random bits. Only its hash is stored.
pub struct RefreshToken(pub String);

impl RefreshToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn hash(token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_platform::token::{TokenError, TokenVerifier};

    fn issuer(ttl: Duration) -> AccessTokenIssuer {
        AccessTokenIssuer::new(None, "quill-auth".into(), "quill".into(), ttl).unwrap()
    }

    /// What every other process builds from `GetPublicKeys`.
    fn verifier_of(issuer: &AccessTokenIssuer) -> TokenVerifier {
        TokenVerifier::new(
            [(issuer.kid(), issuer.public_key_pem())],
            "quill-auth",
            "quill",
        )
        .unwrap()
    }

    #[test]
    fn issued_tokens_verify_with_the_public_key_only() {
        let issuer = issuer(Duration::from_secs(60));
        let verifier = verifier_of(&issuer);
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let token = issuer.issue(user, session, Role::Creator).unwrap();
        let claims = verifier.verify(&token.token).unwrap();
        assert_eq!(
            (claims.sub, claims.sid, claims.role),
            (user, session, Role::Creator)
        );
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn a_session_token_lives_with_its_session_and_names_its_kind() {
        let issuer = issuer(Duration::from_secs(60));
        let verifier = verifier_of(&issuer);
        let session_ends = Utc::now() + chrono::Duration::days(30);
        let token = issuer
            .issue_session_token(Uuid::new_v4(), Uuid::new_v4(), Role::Viewer, session_ends)
            .unwrap();
        let claims = verifier.verify(&token.token).unwrap();
        assert_eq!(claims.aud, "quill:session");
        assert_eq!(claims.exp, session_ends.timestamp());
        // A verifier that knows only access tokens refuses it.
        let mut strict = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        strict.set_audience(&["quill"]);
        let key =
            jsonwebtoken::DecodingKey::from_ed_pem(issuer.public_key_pem().as_bytes()).unwrap();
        assert!(jsonwebtoken::decode::<Claims>(&token.token, &key, &strict).is_err());
        let access = issuer
            .issue(Uuid::new_v4(), Uuid::new_v4(), Role::Viewer)
            .unwrap();
        assert!(jsonwebtoken::decode::<Claims>(&access.token, &key, &strict).is_ok());
    }

    #[test]
    fn a_configured_key_survives_a_restart() {
        let pem = SigningKey::generate(&mut OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap();
        let a = AccessTokenIssuer::new(Some(&pem), "i".into(), "a".into(), Duration::from_secs(60))
            .unwrap();
        let b = AccessTokenIssuer::new(Some(&pem), "i".into(), "a".into(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(a.kid(), b.kid());
        assert!(
            AccessTokenIssuer::new(
                Some("not a key"),
                "i".into(),
                "a".into(),
                Duration::from_secs(1)
            )
            .is_err()
        );
    }

    #[test]
    fn another_keys_signature_is_rejected() {
        let ours = issuer(Duration::from_secs(60));
        let theirs = issuer(Duration::from_secs(60));
        let verifier =
            TokenVerifier::new([(ours.kid(), ours.public_key_pem())], "quill-auth", "quill")
                .unwrap();
        let forged = theirs
            .issue(Uuid::new_v4(), Uuid::new_v4(), Role::Admin)
            .unwrap();
        assert!(matches!(
            verifier.verify(&forged.token),
            Err(TokenError::UnknownKey)
        ));
    }

    #[test]
    fn refresh_tokens_are_random_and_hash_stably() {
        let (a, b) = (RefreshToken::generate(), RefreshToken::generate());
        assert_ne!(a.0, b.0);
        assert_eq!(a.0.len(), 43);
        assert_eq!(RefreshToken::hash(&a.0), RefreshToken::hash(&a.0));
    }

    #[test]
    fn published_keys_are_every_pem_block_named_as_their_signer_names_them() {
        let (a, b) = (
            issuer(Duration::from_secs(60)),
            issuer(Duration::from_secs(60)),
        );
        let both = format!("{}\n{}", a.public_key_pem(), b.public_key_pem());
        let published = PublishedKey::parse_all(&both).unwrap();
        let kids: Vec<&str> = published.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [a.kid(), b.kid()]);
        assert_eq!(published[0], a.public_keys()[0]);
        // Publishing the signing key again lists it once.
        assert_eq!(a.publishing(published).public_keys().len(), 2);
        assert!(
            PublishedKey::parse_all("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")
                .is_err()
        );
        assert!(PublishedKey::parse_all("").unwrap().is_empty());
    }
}
