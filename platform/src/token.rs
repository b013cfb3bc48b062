//! Access-token verification with public keys only. The auth service signs;
//! every other process verifies with the keys auth publishes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::future::BoxFuture;
use tokio::time::Instant;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use quill_proto::auth::v1::{
    GetPublicKeysRequest, GetPublicKeysResponse, auth_service_client::AuthServiceClient,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::authz::Role;

/// The claims of a Quill access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// Session id; revoking the session invalidates the token.
    pub sid: Uuid,
    pub role: Role,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed or its signature is invalid")]
    Invalid,
    #[error("token has expired")]
    Expired,
    #[error("token was signed with an unknown key")]
    UnknownKey,
    #[error("public key is unusable: {0}")]
    BadKey(String),
}

/// The audience of session tokens: the access tokens' audience, marked, so
/// verifiers that check signatures alone (and so cannot see a revocation)
/// refuse tokens that live for days.
pub fn session_audience(audience: &str) -> String {
    format!("{audience}:session")
}

/// Verifies EdDSA-signed access and session tokens against a set of public
/// keys by `kid`. Accepting session tokens is safe only because every Quill
/// process follows a verification with the session check
/// ([`crate::authn`]).
pub struct TokenVerifier {
    keys: RwLock<HashMap<String, DecodingKey>>,
    validation: Validation,
    /// Where keys are fetched again when a token names one not known yet.
    source: Option<KeySource>,
    /// Tokens whose signature checked out, by their SHA-256: a client sends
    /// one token with every request until it expires, and an Ed25519 check
    /// costs far more than a lookup. An entry answers only while its token
    /// has not expired, and all are forgotten when the keys change.
    verified: Mutex<HashMap<[u8; 32], Claims>>,
}

/// The most verified tokens remembered (about 200 bytes each); when full,
/// the expired ones go, and if none has, all of them.
const VERIFIED_CAPACITY: usize = 4096;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `(kid, SubjectPublicKeyInfo PEM)` pairs.
pub type PublicKeys = Vec<(String, String)>;
pub type FetchKeys = Arc<dyn Fn() -> BoxFuture<'static, Result<PublicKeys, String>> + Send + Sync>;

/// At most one fetch per this long: a token naming an unknown kid costs no
/// more than that, whoever sends how many.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

struct KeySource {
    fetch: FetchKeys,
    /// When keys were last fetched; also makes concurrent misses wait for
    /// one fetch instead of each making its own.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

fn decoding_keys<'a>(
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<HashMap<String, DecodingKey>, TokenError> {
    keys.into_iter()
        .map(|(kid, pem)| {
            DecodingKey::from_ed_pem(pem.as_bytes())
                .map(|key| (kid.to_owned(), key))
                .map_err(|e| TokenError::BadKey(e.to_string()))
        })
        .collect()
}

impl TokenVerifier {
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, TokenError> {
        let keys = decoding_keys(keys)?;
        // Only EdDSA is accepted, so `alg: none` and HMAC-with-the-public-key
        // confusion are rejected before any signature check.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience.to_owned(), session_audience(audience)]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            keys: RwLock::new(keys),
            validation,
            source: None,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Fetches the keys again from `fetch` when a token names a kid not
    /// known yet: a key published after this verifier started (rotation)
    /// is learnt at its first token.
    pub fn refetching(mut self, fetch: FetchKeys) -> Self {
        self.source = Some(KeySource {
            fetch,
            fetched: tokio::sync::Mutex::new(Some(Instant::now())),
        });
        self
    }

    /// Verifies with the keys known now.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self.remembered().get(&digest).cloned();
        if let Some(claims) = remembered {
            // As the full check judges `exp`, with the same leeway.
            return if claims.exp + self.validation.leeway as i64 >= unix_now() {
                Ok(claims)
            } else {
                Err(TokenError::Expired)
            };
        }
        let claims = self.check_signature(token)?;
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_CAPACITY {
            let now = unix_now() - self.validation.leeway as i64;
            verified.retain(|_, claims| claims.exp >= now);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(digest, claims.clone());
        Ok(claims)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Claims>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_signature(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// [`Self::verify`], and for a kid not known yet, once more after the
    /// keys are fetched again (at most once per [`REFETCH_INTERVAL`]).
    pub async fn verify_fetching(&self, token: &str) -> Result<Claims, TokenError> {
        match self.verify(token) {
            Err(TokenError::UnknownKey) if self.refetch().await => self.verify(token),
            verified => verified,
        }
    }

    /// Whether the keys may have changed: fetched now, or by a concurrent
    /// miss a moment ago.
    async fn refetch(&self) -> bool {
        let Some(source) = &self.source else {
            return false;
        };
        let mut fetched = source.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
            return true;
        }
        // Stamped when the fetch is done, not before: a caller that gives
        // up mid-fetch (its client hung up) must not use the window up.
        let keys = (source.fetch)().await.and_then(|keys| {
            decoding_keys(keys.iter().map(|(k, p)| (k.as_str(), p.as_str())))
                .map_err(|e| e.to_string())
        });
        *fetched = Some(Instant::now());
        match keys {
            Ok(keys) => {
                tracing::info!(
                    keys = keys.len(),
                    "token keys fetched again for an unknown kid"
                );
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                // A key withdrawn early (compromised) must stop verifying
                // the tokens it signed at once.
                self.remembered().clear();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch token keys again; the known ones stay");
                false
            }
        }
    }

    /// Builds a verifier from the keys the auth service publishes, retrying
    /// while auth is not reachable yet; it fetches them again when a token
    /// names a key it does not know.
    pub async fn from_auth_service(
        channel: tonic::transport::Channel,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let response = crate::retry::with_backoff("fetching auth public keys", 30, || {
            ask_for_keys(channel.clone())
        })
        .await?;
        let verifier = Self::new(
            response
                .keys
                .iter()
                .map(|k| (k.kid.as_str(), k.public_key_pem.as_str())),
            &response.issuer,
            &response.audience,
        )?;
        let fetch: FetchKeys = Arc::new(move || {
            let asked = ask_for_keys(channel.clone());
            Box::pin(async move {
                let keys = asked
                    .await
                    .map_err(|status| status.message().to_owned())?
                    .keys;
                Ok(keys
                    .into_iter()
                    .map(|k| (k.kid, k.public_key_pem))
                    .collect())
            })
        });
        Ok(verifier.refetching(fetch))
    }
}

/// One `GetPublicKeys` call. A balanced channel with no replica yet waits
/// rather than fails, so the call is bounded.
fn ask_for_keys(
    channel: tonic::transport::Channel,
) -> impl Future<Output = Result<GetPublicKeysResponse, tonic::Status>> {
    let mut client = crate::message_limits!(AuthServiceClient::new(channel));
    async move {
        tokio::time::timeout(
            Duration::from_secs(5),
            client.get_public_keys(GetPublicKeysRequest {}),
        )
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no auth replica answered")))
        .map(tonic::Response::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ed25519_dalek::{
        SigningKey,
        pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding},
    };
    use jsonwebtoken::{EncodingKey, Header, encode};

    use super::*;

    struct Key {
        kid: &'static str,
        private_pem: String,
        public_pem: String,
    }

    fn key(kid: &'static str) -> Key {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Key {
            kid,
            private_pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public_pem: key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    }

    fn token(key: &Key) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: Uuid::now_v7(),
            sid: Uuid::now_v7(),
            role: Role::Creator,
            exp: now + 60,
            iat: now,
            iss: "quill-auth".into(),
            aud: "quill".into(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.to_owned());
        let signing = EncodingKey::from_ed_pem(key.private_pem.as_bytes()).unwrap();
        encode(&header, &claims, &signing).unwrap()
    }

    /// A verifier knowing `old`, whose source publishes what `published`
    /// holds when asked, and counts how often it was.
    fn verifier(old: &Key, published: Arc<Mutex<PublicKeys>>) -> (TokenVerifier, Arc<Mutex<u32>>) {
        let fetches = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&fetches);
        let fetch: FetchKeys = Arc::new(move || {
            *counted.lock().unwrap() += 1;
            let keys = published.lock().unwrap().clone();
            Box::pin(async move { Ok(keys) })
        });
        let verifier =
            TokenVerifier::new([(old.kid, old.public_pem.as_str())], "quill-auth", "quill")
                .unwrap()
                .refetching(fetch);
        (verifier, fetches)
    }

    /// A token verified once is answered from memory, only while it has
    /// not expired, only for its exact bytes, and not after the keys change.
    #[tokio::test(start_paused = true)]
    async fn a_verified_token_is_remembered_until_it_expires_or_the_keys_change() {
        let (old, stranger) = (key("old"), key("stranger"));
        let published = Arc::new(Mutex::new(vec![(
            old.kid.to_owned(),
            old.public_pem.clone(),
        )]));
        let (verifier, _) = verifier(&old, Arc::clone(&published));
        let token = token(&old);
        let claims = verifier.verify(&token).unwrap();

        // Without its key, only memory can answer.
        let keys = std::mem::take(&mut *verifier.keys.write().unwrap());
        assert_eq!(verifier.verify(&token).unwrap(), claims, "from memory");
        let mut altered = token.clone();
        altered.push('x');
        assert!(verifier.verify(&altered).is_err(), "other bytes: checked");

        // A remembered token past its expiry (and the leeway) is expired.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let stale = Claims {
            exp: unix_now() - 60,
            ..claims.clone()
        };
        verifier.remembered().insert(digest, stale);
        assert!(matches!(verifier.verify(&token), Err(TokenError::Expired)));

        // The keys change (fetched again, the old one withdrawn): what was
        // remembered is forgotten.
        *verifier.keys.write().unwrap() = keys;
        verifier.remembered().clear();
        assert!(verifier.verify(&token).is_ok());
        published.lock().unwrap().clear();
        tokio::time::advance(REFETCH_INTERVAL).await;
        assert!(matches!(
            verifier
                .verify_fetching(&super::tests::token(&stranger))
                .await,
            Err(TokenError::UnknownKey)
        ));
        assert!(matches!(
            verifier.verify(&token),
            Err(TokenError::UnknownKey)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_published_after_start_is_learnt_at_its_first_token_and_strangers_cost_one_fetch()
    {
        let (old, new) = (key("old"), key("new"));
        let published = Arc::new(Mutex::new(vec![(
            old.kid.to_owned(),
            old.public_pem.clone(),
        )]));
        let (verifier, fetches) = verifier(&old, Arc::clone(&published));
        assert!(verifier.verify_fetching(&token(&old)).await.is_ok());
        assert_eq!(*fetches.lock().unwrap(), 0, "a known key needs no fetch");

        // Rotation: the new key is published beside the old one.
        published
            .lock()
            .unwrap()
            .push((new.kid.to_owned(), new.public_pem.clone()));
        tokio::time::advance(REFETCH_INTERVAL).await;
        assert!(verifier.verify_fetching(&token(&new)).await.is_ok());
        assert!(
            verifier.verify_fetching(&token(&old)).await.is_ok(),
            "the old one stays"
        );
        assert_eq!(*fetches.lock().unwrap(), 1);

        // Tokens naming keys nobody published: at most one fetch a window.
        let stranger = key("stranger");
        for _ in 0..50 {
            assert!(matches!(
                verifier.verify_fetching(&token(&stranger)).await,
                Err(TokenError::UnknownKey)
            ));
        }
        assert_eq!(*fetches.lock().unwrap(), 1, "still within the window");
        tokio::time::advance(REFETCH_INTERVAL).await;
        let _ = verifier.verify_fetching(&token(&stranger)).await;
        assert_eq!(*fetches.lock().unwrap(), 2);

        // The old key retired: its tokens no longer verify once refetched.
        published.lock().unwrap().remove(0);
        tokio::time::advance(REFETCH_INTERVAL).await;
        let _ = verifier.verify_fetching(&token(&stranger)).await;
        assert!(matches!(
            verifier.verify(&token(&old)),
            Err(TokenError::UnknownKey)
        ));
    }
}
