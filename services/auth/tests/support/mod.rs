//! Arrange helpers for auth's integration tests: a running auth server with a
//! signing key the test knows, so it can also mint tokens auth never issued.

#![allow(dead_code)]

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use quill_auth::testing::TestAuth;
use quill_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use serde_json::{Value, json};
use tonic::{Code, Request, transport::Channel};

pub struct Harness {
    pub auth: TestAuth,
    pub signing_key_pem: String,
}

pub struct Account {
    pub user: pb::User,
    pub tokens: pb::Tokens,
    pub password: String,
}

pub fn new_signing_key_pem() -> String {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    SigningKey::from_bytes(&seed)
        .to_pkcs8_pem(LineEnding::LF)
        .expect("encode key")
        .to_string()
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut quill_auth::Config)) -> Self {
        let signing_key_pem = new_signing_key_pem();
        let pem = signing_key_pem.clone();
        let auth = TestAuth::start_with(move |c| {
            c.signing_key_pem = Some(pem);
            tweak(c);
        })
        .await;
        Self {
            auth,
            signing_key_pem,
        }
    }

    pub fn client(&self) -> AuthServiceClient<Channel> {
        self.auth.client()
    }

    pub async fn register(&self, name: &str) -> Account {
        let password = format!("{name}-password");
        let response = self
            .client()
            .register(pb::RegisterRequest {
                email: format!("{name}@example.com"),
                username: name.to_owned(),
                password: password.clone(),
                client: Some(pb::ClientInfo {
                    user_agent: "test".into(),
                    ip: "127.0.0.1".into(),
                }),
            })
            .await
            .expect("register")
            .into_inner();
        Account {
            user: response.user.expect("user"),
            tokens: response.tokens.expect("tokens"),
            password,
        }
    }

    pub async fn login(&self, account: &Account) -> pb::AuthResponse {
        self.client()
            .login(pb::LoginRequest {
                email: account.user.email.clone(),
                password: account.password.clone(),
                client: None,
            })
            .await
            .expect("login")
            .into_inner()
    }

    /// Gives a user a role directly in the database (the arrange step for
    /// "an admin exists"; the API itself only lets admins change roles).
    pub async fn set_role_in_db(&self, username: &str, role: &str) {
        let pool = sqlx::PgPool::connect(&self.auth.db.url)
            .await
            .expect("connect");
        sqlx::query("UPDATE users SET role = $2 WHERE username = $1")
            .bind(username)
            .bind(role)
            .execute(&pool)
            .await
            .expect("set role");
        pool.close().await;
    }

    pub async fn admin(&self, name: &str) -> Account {
        let account = self.register(name).await;
        self.set_role_in_db(name, "admin").await;
        let response = self.login(&account).await;
        Account {
            tokens: response.tokens.expect("tokens"),
            ..account
        }
    }

    /// Signs arbitrary claims with the server's own key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ed_pem(self.signing_key_pem.as_bytes()).expect("key"),
        )
        .expect("sign")
    }

    pub fn kid(&self) -> String {
        let key = quill_auth::tokens::AccessTokenIssuer::new(
            Some(&self.signing_key_pem),
            "x".into(),
            "x".into(),
            std::time::Duration::from_secs(60),
        )
        .expect("issuer");
        key.kid().to_owned()
    }
}

pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// Claims as auth would issue them for `account`, for tests to alter.
pub fn claims_of(account: &Account, token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("jwt payload");
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json");
    claims["sub"] = json!(account.user.id);
    claims
}

/// A token with `alg: none` and no signature.
pub fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

pub fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
) -> tonic::Status {
    match result {
        Err(status) if status.code() == code => status,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}
