//! Arrange helpers for auth's integration tests.

#![allow(dead_code, unused_imports)]

use quill_auth::testing::TestAuth;
pub use quill_auth::testing::{claims_of, unsigned_token};
use quill_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use serde_json::Value;
use tonic::{Code, Request, transport::Channel};

pub struct Harness {
    pub auth: TestAuth,
}

pub struct Account {
    pub user: pb::User,
    pub tokens: pb::Tokens,
    pub password: String,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut quill_auth::Config)) -> Self {
        Self {
            auth: TestAuth::start_with(tweak).await,
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

    pub async fn set_role_in_db(&self, username: &str, role: &str) {
        self.auth.set_role_in_db(username, role).await;
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

    pub fn sign(&self, claims: &Value) -> String {
        self.auth.sign(claims)
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
