//! A notification service between real auth, content, RabbitMQ (its own
//! exchange and queue), PostgreSQL and an SMTP sink on loopback; events are
//! published to the test exchange the way the relays publish them.

#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use prost::Message;
use quill_auth::testing::TestAuth;
use quill_content::testing::TestContent;
use quill_events::{broker, new_envelope, testing::TestBroker};
use quill_notification::{
    Config,
    testing::{TestNotification, smtp::SmtpSink, use_broker},
};
use quill_proto::{
    content::v1::{FollowRequest, UnfollowRequest},
    events::v1::{
        ArticleFavorited, ArticlePublished, ArticleSnapshot, CommentAdded, Envelope, UserFollowed,
        UserRegistered, UserSnapshot, UserUpdated, envelope::Payload,
    },
    notification::v1::{ListNotificationsRequest, Notification, SubscribeRequest},
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(10);

/// Fields drop in order: the notification servers stop before their
/// dependencies, the broker's queues go last.
pub struct Stack {
    pub notification: TestNotification,
    pub content: TestContent,
    pub auth: TestAuth,
    pub smtp: SmtpSink,
    pub publisher: Publisher,
    pub db: PgPool,
    pub broker: TestBroker,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let broker = TestBroker::new();
        let smtp = SmtpSink::start().await;
        let auth = TestAuth::start().await;
        let content = TestContent::start(&auth.peer()).await;
        let notification = TestNotification::start(&auth.peer(), &content.url(), |config| {
            use_broker(config, &broker);
            config.smtp = Some(smtp.server());
            tweak(config);
        })
        .await;
        let db = notification.db.connect(2).await;
        let publisher = Publisher::connect(&broker).await;
        Self {
            notification,
            content,
            auth,
            smtp,
            publisher,
            db,
            broker,
        }
    }

    /// Another instance on the same database and queue, as a replica.
    pub async fn replica(&self) -> TestNotification {
        let config = self.notification.config.clone();
        TestNotification::start(&self.auth.peer(), &self.content.url(), move |c| *c = config).await
    }

    /// A user with a valid access token, as auth would issue it. Only
    /// the token and its live session exist: registration is what the
    /// events say. The session is vouched for the way auth answers a check,
    /// in the shared session cache, since auth's database has no such user.
    pub fn user(&self, username: &str) -> TestUser {
        let id = Uuid::new_v4();
        let session = Uuid::new_v4();
        let now = chrono::Utc::now().timestamp();
        let redis = &self.auth.redis;
        let mut conn = redis::Client::open(redis.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("redis");
        redis::cmd("SET")
            .arg(format!("{}session:{session}", redis.prefix))
            .arg(format!("live:{id}:creator"))
            .arg("EX")
            .arg(600)
            .query::<()>(&mut conn)
            .expect("vouch for the session");
        let token = self.auth.sign(&json!({
            "sub": id,
            "sid": session,
            "role": "creator",
            "iat": now,
            "exp": now + 600,
            "iss": self.auth.config.issuer,
            "aud": self.auth.config.audience,
        }));
        TestUser {
            id,
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            token,
        }
    }

    /// A user registered in auth for real, so content can act for them.
    pub async fn signed_up(&self, username: &str) -> TestUser {
        let email = format!("{username}@example.com");
        let response = self
            .auth
            .register(username, &email, "correct horse battery")
            .await;
        TestUser {
            id: response.user.expect("user").id.parse().expect("user id"),
            username: username.to_owned(),
            email,
            token: response.tokens.expect("tokens").access_token,
        }
    }

    /// `follower` follows (or, `false`, unfollows) `followee` through
    /// content's API, as the gateway would.
    pub async fn follow(&self, follower: &TestUser, followee: &TestUser, follow: bool) {
        let mut content = self.content.client();
        let username = followee.username.clone();
        let done = if follow {
            content
                .follow(follower.request(FollowRequest { username }))
                .await
        } else {
            content
                .unfollow(follower.request(UnfollowRequest { username }))
                .await
        };
        done.expect("follow or unfollow");
    }

    /// A user the service has heard of through `user.registered`.
    pub async fn registered(&self, username: &str) -> TestUser {
        let user = self.user(username);
        let event = self.publish(registered(&user)).await;
        self.processed(&event).await;
        user
    }

    pub async fn publish(&self, payload: Payload) -> Envelope {
        let envelope = new_envelope("test", payload);
        self.publisher.publish(&envelope).await;
        envelope
    }

    /// Waits until the service has applied (committed) `event`.
    pub async fn processed(&self, event: &Envelope) {
        let id = Uuid::parse_str(&event.event_id).expect("event id");
        eventually("the event is processed", || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)",
            )
            .bind(id)
            .fetch_one(&self.db)
            .await
            .expect("query")
        })
        .await;
    }

    pub async fn list(&self, user: &TestUser) -> Vec<Notification> {
        self.notification
            .client()
            .list_notifications(user.request(ListNotificationsRequest {
                limit: 100,
                ..Default::default()
            }))
            .await
            .expect("list")
            .into_inner()
            .notifications
    }

    /// A live stream of `user`'s notifications from now, on the first
    /// instance.
    pub async fn subscribe(&self, user: &TestUser) -> tonic::Streaming<Notification> {
        self.notification
            .client()
            .subscribe(user.request(SubscribeRequest::default()))
            .await
            .expect("subscribe")
            .into_inner()
    }

    /// The titles a stream of `user` resumed from `after_id` is sent, in
    /// order, until it falls quiet.
    pub async fn resumed(&self, user: &TestUser, after_id: &str) -> Vec<String> {
        let mut stream = self
            .notification
            .client()
            .subscribe(user.request(SubscribeRequest {
                after_id: Some(after_id.to_owned()),
            }))
            .await
            .expect("resume")
            .into_inner();
        let mut titles = Vec::new();
        while let Ok(next) = tokio::time::timeout(Duration::from_millis(700), stream.next()).await {
            let Some(next) = next else { break };
            titles.push(next.expect("a notification").title);
        }
        titles
    }

    /// Waits until `user` has `n` notifications, and returns them.
    pub async fn wait_for_notifications(&self, user: &TestUser, n: usize) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let list = self.list(user).await;
            if list.len() >= n || tokio::time::Instant::now() > deadline {
                assert_eq!(list.len(), n, "{list:?}");
                return list;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Mail queued for `address` (sent or not).
    pub async fn queued_mail(&self, address: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM outbox_mail m LEFT JOIN recipients r ON r.user_id = m.user_id
             WHERE coalesce(r.email, m.recipient) = $1",
        )
        .bind(address)
        .fetch_one(&self.db)
        .await
        .expect("query")
    }

    /// Makes `followers` follow `author` in content's own database (the
    /// arrange step for a large audience, without a login per follower).
    pub async fn follow_in_content(&self, author: Uuid, followers: &[Uuid]) {
        let pool = PgPool::connect(&self.content.db.url)
            .await
            .expect("content db");
        sqlx::query(
            "INSERT INTO follows (follower_id, followee_id) SELECT f, $2 FROM unnest($1::uuid[]) f",
        )
        .bind(followers)
        .bind(author)
        .execute(&pool)
        .await
        .expect("follows");
        pool.close().await;
    }
}

/// Creates a notification for `user` titled `title` in `tx`, as a
/// consumer's transaction does (a plain insert: how a notification gets its
/// place in the user's stream is the table's business). Returns its id.
pub async fn insert_notification(tx: &mut PgConnection, user: Uuid, title: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO notifications (id, user_id, kind, title, event_id)
         VALUES ($1, $2, 'new_follower', $3, $4)",
    )
    .bind(id)
    .bind(user)
    .bind(title)
    .bind(Uuid::now_v7())
    .execute(tx)
    .await
    .expect("insert a notification");
    id
}

pub struct TestUser {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub token: String,
}

impl TestUser {
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().expect("header"),
        );
        request
    }
}

pub fn registered(user: &TestUser) -> Payload {
    Payload::UserRegistered(UserRegistered {
        user: Some(UserSnapshot {
            id: user.id.to_string(),
            username: user.username.clone(),
            email: user.email.clone(),
            ..Default::default()
        }),
    })
}

/// `user.updated` with `email`, as auth's row stood at `version`.
pub fn updated(user: &TestUser, email: &str, version: chrono::DateTime<chrono::Utc>) -> Payload {
    Payload::UserUpdated(UserUpdated {
        user: Some(UserSnapshot {
            id: user.id.to_string(),
            username: user.username.clone(),
            email: email.to_owned(),
            updated_at: Some(quill_platform::time::to_proto(version)),
            ..Default::default()
        }),
    })
}

pub fn followed(follower: &TestUser, followee: &TestUser) -> Payload {
    Payload::UserFollowed(UserFollowed {
        follower_id: follower.id.to_string(),
        follower_username: follower.username.clone(),
        followee_id: followee.id.to_string(),
        followee_username: followee.username.clone(),
    })
}

pub fn article(author: &TestUser, title: &str) -> ArticleSnapshot {
    ArticleSnapshot {
        id: Uuid::new_v4().to_string(),
        slug: title.to_lowercase().replace(' ', "-"),
        title: title.to_owned(),
        description: format!("About {title}"),
        author_id: author.id.to_string(),
        author_username: author.username.clone(),
        tags: vec![],
    }
}

pub fn commented(commenter: &TestUser, article: ArticleSnapshot, body: &str) -> Payload {
    Payload::CommentAdded(CommentAdded {
        comment_id: 1,
        body: body.to_owned(),
        commenter_id: commenter.id.to_string(),
        commenter_username: commenter.username.clone(),
        article: Some(article),
    })
}

pub fn favorited(user: &TestUser, article: ArticleSnapshot) -> Payload {
    Payload::ArticleFavorited(ArticleFavorited {
        user_id: user.id.to_string(),
        username: user.username.clone(),
        article: Some(article),
    })
}

/// A new article whose event does not carry its audience: the fan-out
/// streams it from content.
pub fn published(article: ArticleSnapshot) -> Payload {
    Payload::ArticlePublished(ArticlePublished {
        article: Some(article),
        followers: None,
    })
}

/// Publishes envelopes to the test exchange as the outbox relay does:
/// persistent, routed by type, confirmed.
pub struct Publisher {
    exchange: String,
    _connection: Connection,
    channel: Channel,
}

impl Publisher {
    pub async fn connect(broker: &TestBroker) -> Self {
        let connection = broker::connect(&broker.url, "test-publisher")
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Self {
            exchange: broker.exchange(),
            _connection: connection,
            channel,
        }
    }

    pub async fn publish(&self, envelope: &Envelope) {
        let confirmation = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                envelope.r#type.as_str().into(),
                BasicPublishOptions::default(),
                &envelope.encode_to_vec(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirmation.is_ack(), "publish not confirmed");
    }
}

/// The next notification `stream` is sent, within [`WAIT`].
pub async fn next_pushed(stream: &mut tonic::Streaming<Notification>) -> Notification {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a live notification in time")
        .expect("stream open")
        .expect("notification")
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
