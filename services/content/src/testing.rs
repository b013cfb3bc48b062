//! A content server running in-process on an ephemeral port, on its own
//! database and event exchange (or a given one, to hear an auth server's
//! events), talking to the auth server at a given URL, for integration tests
//! of this and other crates (the gateway's).

use std::net::SocketAddr;

use quill_events::testing::TestBroker;
use quill_platform::testing::AuthPeer;
use quill_proto::content::v1::content_service_client::ContentServiceClient;
use quill_server::{
    ServiceConfig as _,
    testing::{TestDb, TestServer},
};
use secrecy::ExposeSecret;
use tonic::transport::Channel;

use crate::{Config, server};

pub struct TestContent {
    /// First, so it stops before its database and broker are cleaned up.
    server: TestServer,
    pub addr: SocketAddr,
    pub channel: Channel,
    pub config: Config,
    pub db: TestDb,
    /// Deletes the queues of `config`'s exchange when dropped; the exchange
    /// is this broker's unless `start_with` set another.
    pub broker: TestBroker,
}

impl TestContent {
    /// Starts against the auth server at `auth_url` (e.g. `TestAuth::url()`).
    pub async fn start(auth: &AuthPeer) -> Self {
        Self::start_with(auth, |_| {}).await
    }

    /// Starts with settings adjusted by `tweak`.
    pub async fn start_with(auth: &AuthPeer, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new("quill_content");
        let broker = TestBroker::new();
        let mut config = Config::from_env().expect("content config");
        config.server.database.url = db.url.clone().into();
        config.server.database.max_connections = 5;
        config.auth_url = auth.url.clone();
        config.authn = auth.authn.clone();
        config.cursor_secret = "test cursor secret, not for production".into();
        broker.isolate(&mut config.events, &mut config.events_queue_prefix);
        tweak(&mut config);
        broker.track_catalog(&config.events, &config.events_queue_prefix);
        let server = TestServer::spawn::<server::Content>(config.clone()).await;
        let (addr, channel) = (server.addr, server.channel.clone());
        Self {
            addr,
            channel,
            config,
            db,
            broker,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> ContentServiceClient<Channel> {
        ContentServiceClient::new(self.channel.clone())
    }

    /// Replaces an article's body behind the service's back, past any
    /// validation: how a test gets a row no request could have written.
    pub async fn set_article_body_in_db(&self, slug: &str, body: &str) {
        let pool = sqlx::PgPool::connect(&self.db.url).await.expect("connect");
        sqlx::query("UPDATE articles SET body = $2 WHERE slug = $1")
            .bind(slug)
            .bind(body)
            .execute(&pool)
            .await
            .expect("set body");
        pool.close().await;
        // What a write would do after its commit, or the cached article
        // would hide the row for its TTL.
        let redis = quill_platform::sessions::connect(self.config.authn.redis_url.expose_secret())
            .await
            .expect("redis");
        crate::read_cache::read_cache(
            redis,
            &self.config.authn.redis_prefix,
            self.config.cache_ttl,
        )
        .invalidate(&[crate::read_cache::versions::article(slug)])
        .await;
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.server.stop().await;
    }
}
