//! A gateway in front of in-process auth, content and notification servers,
//! all on ephemeral ports, gateway and auth sharing one Redis key prefix,
//! mail going to an SMTP sink on loopback; and helpers to speak REST to it.

#![allow(dead_code)]

use std::{
    net::{SocketAddr, ToSocketAddrs},
    time::Duration,
};

use quill_auth::testing::TestAuth;
use quill_content::testing::TestContent;
use quill_events::testing::amqp_url;
use quill_gateway::{Config, server};
use quill_notification::testing::smtp::SmtpSink;
use quill_notification::testing::{TestNotification, use_broker};
use quill_platform::{
    shutdown::CancellationToken,
    testing::{TcpProxy, ephemeral_listener},
};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Fields drop in order: the consumers (notification, content) stop before
/// auth, whose broker clean-up deletes every queue of the test.
pub struct TestGateway {
    /// Consumes the events auth and content publish, on auth's exchange.
    pub notification: TestNotification,
    pub content: TestContent,
    pub auth: TestAuth,
    /// The SMTP server the notification service delivers mail to.
    pub smtp: SmtpSink,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The gateway's image store; other gateways of the test share it.
    pub uploads: tempfile::TempDir,
}

type Tweak<'a, C> = Box<dyn FnOnce(&mut C) + 'a>;

/// Adjustments to each server's settings before the system starts.
pub struct Setup<'a> {
    amqp_url: Option<String>,
    auth: Tweak<'a, quill_auth::Config>,
    content: Tweak<'a, quill_content::Config>,
    notification: Tweak<'a, quill_notification::Config>,
    gateway: Tweak<'a, Config>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            amqp_url: None,
            auth: Box::new(|_| {}),
            content: Box::new(|_| {}),
            notification: Box::new(|_| {}),
            gateway: Box::new(|_| {}),
        }
    }
}

impl<'a> Setup<'a> {
    pub fn auth(mut self, tweak: impl FnOnce(&mut quill_auth::Config) + 'a) -> Self {
        self.auth = Box::new(tweak);
        self
    }

    pub fn content(mut self, tweak: impl FnOnce(&mut quill_content::Config) + 'a) -> Self {
        self.content = Box::new(tweak);
        self
    }

    pub fn notification(
        mut self,
        tweak: impl FnOnce(&mut quill_notification::Config) + 'a,
    ) -> Self {
        self.notification = Box::new(tweak);
        self
    }

    pub fn gateway(mut self, tweak: impl FnOnce(&mut Config) + 'a) -> Self {
        self.gateway = Box::new(tweak);
        self
    }

    pub async fn start(self) -> TestGateway {
        TestGateway::launch(self).await
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// A registered user as the REST API returned it.
pub struct User {
    pub username: String,
    pub email: String,
    pub password: String,
    /// RealWorld's `token`: the session token.
    pub token: String,
    /// The short-lived access token issued beside it.
    pub access_token: String,
    pub refresh_token: String,
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::setup().gateway(tweak).start().await
    }

    /// Settings of every server of the system, for the tests that need to
    /// adjust more than the gateway's.
    pub fn setup<'a>() -> Setup<'a> {
        Setup::default()
    }

    /// Starts with every service reaching RabbitMQ through `proxy` (relays,
    /// consumers, queue declarations), so a test can cut the link.
    pub async fn start_behind(proxy: &TcpProxy) -> Self {
        let mut setup = Self::setup();
        setup.amqp_url = Some(broker_url_via(proxy.addr()));
        setup.start().await
    }

    async fn launch(setup: Setup<'_>) -> Self {
        let Setup {
            amqp_url,
            auth,
            content,
            notification,
            gateway: tweak,
        } = setup;
        let auth = TestAuth::start_with(|c| {
            if let Some(url) = &amqp_url {
                c.events.amqp_url = url.clone().into();
            }
            auth(c);
        })
        .await;
        let content = TestContent::start_with(&auth.peer(), |c| {
            c.events.exchange = auth.config.events.exchange.clone();
            c.events_queue_prefix = auth.config.events_queue_prefix.clone();
            if let Some(url) = &amqp_url {
                c.events.amqp_url = url.clone().into();
            }
            content(c);
        })
        .await;
        let smtp = SmtpSink::start().await;
        let notification = TestNotification::start(&auth.peer(), &content.url(), |c| {
            use_broker(c, &auth.broker);
            if let Some(url) = &amqp_url {
                c.events.amqp_url = url.clone().into();
            }
            c.smtp = Some(smtp.server());
            notification(c);
        })
        .await;
        let mut config = Config::from_env().expect("gateway config");
        config.auth_url = auth.url();
        config.content_url = content.url();
        config.notification_url = notification.url();
        config.authn = auth.config.authn.clone();
        let uploads = tempfile::tempdir().expect("an upload directory");
        config.uploads.location = uploads.path().display().to_string();
        tweak(&mut config);
        let (listener, addr) = ephemeral_listener().await;
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::run(config, listener, stop.clone()));
        let gateway = Self {
            uploads,
            auth,
            content,
            notification,
            smtp,
            addr,
            http: reqwest::Client::new(),
            stop,
            task: Some(task),
        };
        for _ in 0..200 {
            if gateway
                .http
                .get(gateway.url("/healthz"))
                .send()
                .await
                .is_ok()
            {
                return gateway;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway did not start");
    }

    /// Another gateway in front of the same services, whose shutdown the
    /// test controls and awaits (settings adjusted by `tweak`).
    pub async fn another_gateway(&self, tweak: impl FnOnce(&mut Config)) -> OtherGateway {
        let mut config = Config::from_env().expect("gateway config");
        config.auth_url = self.auth.url();
        config.content_url = self.content.url();
        config.notification_url = self.notification.url();
        config.authn = self.auth.config.authn.clone();
        config.uploads.location = self.uploads.path().display().to_string();
        tweak(&mut config);
        let (listener, addr) = ephemeral_listener().await;
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::run(config, listener, stop.clone()));
        let base = format!("http://{addr}");
        for _ in 0..200 {
            if self
                .http
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok()
            {
                return OtherGateway { base, stop, task };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the other gateway did not start");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `body` as JSON (if any) with `Authorization: Token <token>`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Token {token}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::read(request.send().await.expect("request")).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Response {
        Self::read(request.send().await.expect("request")).await
    }

    async fn read(response: reqwest::Response) -> Response {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn register(&self, username: &str) -> User {
        let email = format!("{username}@example.com");
        let password = format!("{username}-secret");
        let response = self
            .post(
                "/api/users",
                None,
                json!({"user": {"username": username, "email": email, "password": password}}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        User {
            username: username.to_owned(),
            email,
            password,
            token: response.body["user"]["token"]
                .as_str()
                .expect("token")
                .to_owned(),
            access_token: response.body["user"]["accessToken"]
                .as_str()
                .expect("access token")
                .to_owned(),
            refresh_token: response.body["user"]["refreshToken"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        }
    }

    /// `PUT /api/user` with `changes` as the user object.
    pub async fn put_user(&self, token: &str, changes: Value) -> Response {
        self.call(
            Method::PUT,
            "/api/user",
            Some(token),
            Some(json!({ "user": changes })),
        )
        .await
    }

    pub async fn login(&self, user: &User) -> Response {
        self.post(
            "/api/users/login",
            None,
            json!({"user": {"email": user.email, "password": user.password}}),
        )
        .await
    }

    /// Registers a user and makes them an admin; returns a token with the role.
    pub async fn admin(&self, username: &str) -> User {
        let user = self.register(username).await;
        self.auth.set_role_in_db(username, "admin").await;
        let login = self.login(&user).await;
        User {
            token: login.body["user"]["token"]
                .as_str()
                .expect("token")
                .to_owned(),
            access_token: login.body["user"]["accessToken"]
                .as_str()
                .expect("access token")
                .to_owned(),
            ..user
        }
    }
}

impl TestGateway {
    /// Publishes an article by `author`; returns it as the API did.
    pub async fn article(&self, author: &User, title: &str, tags: &[&str]) -> Value {
        let response = self
            .post(
                "/api/articles",
                Some(&author.token),
                json!({"article": {
                    "title": title,
                    "description": format!("About {title}"),
                    "body": format!("All about {title}."),
                    "tagList": tags,
                }}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        response.body["article"].clone()
    }
}

impl TestGateway {
    /// `follower` follows `username`; returns the profile.
    pub async fn follow(&self, follower: &User, username: &str) -> Value {
        let path = format!("/api/profiles/{username}/follow");
        let response = self
            .call(Method::POST, &path, Some(&follower.token), None)
            .await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        assert_eq!(response.body["profile"]["following"], true);
        response.body["profile"].clone()
    }

    /// `commenter` comments on the article `slug`; returns the comment.
    pub async fn comment(&self, commenter: &User, slug: &str, body: &str) -> Value {
        let response = self
            .post(
                &format!("/api/articles/{slug}/comments"),
                Some(&commenter.token),
                json!({"comment": {"body": body}}),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        response.body["comment"].clone()
    }

    /// `fan` favorites the article `slug`; returns the article.
    pub async fn favorite(&self, fan: &User, slug: &str) -> Value {
        let path = format!("/api/articles/{slug}/favorite");
        let response = self.call(Method::POST, &path, Some(&fan.token), None).await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        assert_eq!(response.body["article"]["favorited"], true);
        response.body["article"].clone()
    }

    /// `user`'s notifications, newest first, as `GET /api/notifications`
    /// lists them; the reply's total must be its length.
    pub async fn notifications(&self, user: &User) -> Vec<Value> {
        let list = self
            .get("/api/notifications?limit=100", Some(&user.token))
            .await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        let notifications = list.body["notifications"]
            .as_array()
            .expect("notifications")
            .clone();
        assert_eq!(
            list.body["notificationsCount"],
            notifications.len(),
            "{}",
            list.body
        );
        notifications
    }

    /// Changes `user`'s delivery preferences for one kind of notification.
    pub async fn set_preference(&self, user: &User, kind: &str, in_app: bool, email: bool) {
        let response = self
            .call(
                Method::PUT,
                "/api/notifications/preferences",
                Some(&user.token),
                Some(json!({ "preferences": {
                    "kinds": [{ "kind": kind, "inApp": in_app, "email": email }],
                }})),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        let kinds = response.body["preferences"]["kinds"]
            .as_array()
            .expect("kinds");
        assert!(
            kinds.contains(&json!({ "kind": kind, "inApp": in_app, "email": email })),
            "{}",
            response.body
        );
    }
}

/// A gateway started by [`TestGateway::another_gateway`].
pub struct OtherGateway {
    /// `http://host:port`.
    pub base: String,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The address of the RabbitMQ server tests use, for a [`TcpProxy`] in
/// front of it.
pub fn broker_addr() -> SocketAddr {
    let url = amqp_url();
    let (_, authority, _) = split_broker_url(&url);
    authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("no address for the broker in {url}"))
}

/// The URL tests reach RabbitMQ at, with its host and port replaced by
/// `addr`: credentials and vhost stay.
fn broker_url_via(addr: SocketAddr) -> String {
    let url = amqp_url();
    let (credentials, _, vhost) = split_broker_url(&url);
    format!("amqp://{credentials}{addr}{vhost}")
}

/// `amqp://user:pass@host:port/vhost` -> (`user:pass@`, `host:port`, `/vhost`).
fn split_broker_url(url: &str) -> (&str, &str, &str) {
    let rest = url
        .strip_prefix("amqp://")
        .unwrap_or_else(|| panic!("not an amqp:// URL: {url}"));
    let (server, vhost) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match server.rfind('@') {
        Some(at) => (&server[..=at], &server[at + 1..], vhost),
        None => ("", server, vhost),
    }
}

/// A gRPC request carrying `token`, as a caller straight to a service's port.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        quill_platform::grpc::AUTHORIZATION,
        tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"),
    );
    request
}

/// The messages RealWorld's error body lists for `field`.
pub fn errors_for(body: &Value, field: &str) -> Vec<String> {
    body["errors"][field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
