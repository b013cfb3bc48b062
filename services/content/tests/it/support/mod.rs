//! Test support: an auth and a content server in-process, each on its own
//! database, and helpers for "a registered user" and "an article by X".
#![allow(dead_code)]

use std::{future::Future, time::Duration};

use quill_auth::testing::TestAuth;
use quill_content::testing::TestContent;
use quill_platform::{grpc::ServiceChannel, service_identity::Service, testing};
use quill_proto::{
    auth::v1::LoginRequest,
    content::v1::{self as pb, content_service_client::ContentServiceClient},
};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

pub const PASSWORD: &str = "correct horse battery";

pub struct World {
    // Content first: it stops before the auth it depends on.
    pub content: TestContent,
    pub auth: TestAuth,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub token: String,
}

impl World {
    /// Content hears auth's events: it consumes from auth's exchange, and
    /// publishes its own there too, for probes to see.
    pub async fn start() -> Self {
        let auth = TestAuth::start().await;
        let content = TestContent::start_with(&auth.peer(), |config| {
            config.events.exchange = auth.config.events.exchange.clone();
            config.events_queue_prefix = auth.config.events_queue_prefix.clone();
        })
        .await;
        Self { content, auth }
    }

    /// Content on an exchange of its own, so that it does not hear of
    /// auth's users: each is new to it at their first write, and learned
    /// from auth then. Its settings are adjusted by `tweak`.
    pub async fn start_unheard(tweak: impl FnOnce(&mut quill_content::Config)) -> Self {
        let auth = TestAuth::start().await;
        let content = TestContent::start_with(&auth.peer(), tweak).await;
        Self { content, auth }
    }

    pub fn client(&self) -> ContentServiceClient<Channel> {
        self.content.client()
    }

    /// A pool on content's own database, for what a test sets up or reads
    /// behind the service.
    pub async fn content_db(&self) -> sqlx::PgPool {
        let options = self.content.config.server.database.connect_options();
        sqlx::PgPool::connect_with(options.expect("content's database options"))
            .await
            .expect("content's database")
    }

    /// A client whose calls prove to come from the notification service,
    /// for the internal calls only it may make.
    pub fn notification_client(&self) -> ContentServiceClient<ServiceChannel> {
        ContentServiceClient::new(testing::as_service(
            self.content.channel.clone(),
            Service::Notification,
        ))
    }

    /// A registered user (role creator, auth's default).
    pub async fn user(&self, username: &str) -> User {
        let email = format!("{}@example.com", username.to_lowercase());
        let response = self.auth.register(username, &email, PASSWORD).await;
        let user = response.user.expect("user");
        User {
            id: user.id,
            username: user.username,
            email,
            token: response.tokens.expect("tokens").access_token,
        }
    }

    /// A registered user with `role`, set in auth's database, logged in
    /// again so the token carries it.
    pub async fn user_with_role(&self, username: &str, role: &str) -> User {
        let mut user = self.user(username).await;
        let pool = sqlx::PgPool::connect(&self.auth.db.url)
            .await
            .expect("auth db");
        sqlx::query("UPDATE users SET role = $1 WHERE username = $2")
            .bind(role)
            .bind(username)
            .execute(&pool)
            .await
            .expect("set role");
        pool.close().await;
        user.token = self
            .auth
            .client()
            .login(LoginRequest {
                email: user.email.clone(),
                password: PASSWORD.to_owned(),
                client: None,
            })
            .await
            .expect("login")
            .into_inner()
            .tokens
            .expect("tokens")
            .access_token;
        user
    }

    /// An article by `author` with a body mentioning its title.
    pub async fn article_by(&self, author: &User, title: &str, tags: &[&str]) -> pb::Article {
        self.client()
            .create_article(as_user(
                author,
                pb::CreateArticleRequest {
                    title: title.to_owned(),
                    description: format!("About {title}"),
                    body: format!("The body of {title}."),
                    tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                },
            ))
            .await
            .expect("create article")
            .into_inner()
    }

    /// `user` favorites the article, or withdraws their favorite.
    pub async fn set_favorite(&self, user: &User, slug: &str, favorite: bool) {
        let slug = slug.to_owned();
        if favorite {
            self.client()
                .favorite_article(as_user(user, pb::FavoriteArticleRequest { slug }))
                .await
                .expect("favorite");
        } else {
            self.client()
                .unfavorite_article(as_user(user, pb::UnfavoriteArticleRequest { slug }))
                .await
                .expect("unfavorite");
        }
    }

    pub async fn get(&self, viewer: Option<&User>, slug: &str) -> Result<pb::Article, Status> {
        let request = pb::GetArticleRequest {
            slug: slug.to_owned(),
        };
        let request = match viewer {
            Some(user) => as_user(user, request),
            None => Request::new(request),
        };
        self.client()
            .get_article(request)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn follow(&self, follower: &User, followee: &User) {
        self.client()
            .follow(as_user(
                follower,
                pb::FollowRequest {
                    username: followee.username.clone(),
                },
            ))
            .await
            .expect("follow");
    }

    pub async fn unfollow(&self, follower: &User, followee: &User) {
        self.client()
            .unfollow(as_user(
                follower,
                pb::UnfollowRequest {
                    username: followee.username.clone(),
                },
            ))
            .await
            .expect("unfollow");
    }

    pub async fn list(
        &self,
        viewer: Option<&User>,
        request: pb::ListArticlesRequest,
    ) -> Result<pb::ListArticlesResponse, Status> {
        let request = match viewer {
            Some(user) => as_user(user, request),
            None => Request::new(request),
        };
        self.client()
            .list_articles(request)
            .await
            .map(|r| r.into_inner())
    }
}

/// A request carrying `user`'s access token, as the gateway forwards it.
pub fn as_user<T>(user: &User, message: T) -> Request<T> {
    with_token(&user.token, message)
}

pub fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// Asserts the status code and returns the fields the details name.
pub fn assert_code(result: Result<impl std::fmt::Debug, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            status
        }
    }
}

/// The fields a status's `BadRequest` details name.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| v.field)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
}

pub fn titles(response: &pb::ListArticlesResponse) -> Vec<String> {
    response.articles.iter().map(|a| a.title.clone()).collect()
}

/// Sessions of `pool`'s database waiting for a lock another holds.
pub async fn lock_waiters(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Polls `check` until it holds, for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
