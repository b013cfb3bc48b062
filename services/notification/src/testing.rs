//! A notification server running in-process on an ephemeral port, on its
//! own database, talking to the auth and content servers at given URLs, for
//! integration tests of this and other crates (the gateway's).

use std::{net::SocketAddr, time::Duration};

use quill_events::{broker, testing::TestBroker};
use quill_platform::testing::AuthPeer;
use quill_proto::notification::v1::notification_service_client::NotificationServiceClient;
use quill_server::{
    ServiceConfig as _,
    testing::{TestDb, TestServer},
};
use secrecy::ExposeSecret;
use tonic::transport::Channel;

use crate::{Config, server};

pub mod smtp;

pub struct TestNotification {
    /// First, so it stops before its database and broker are cleaned up.
    server: TestServer,
    pub addr: SocketAddr,
    pub channel: Channel,
    pub config: Config,
    pub db: TestDb,
}

impl TestNotification {
    /// Starts against auth and content at the given URLs, with settings
    /// adjusted by `tweak` (see [`use_broker`]). Its
    /// queue is declared before this returns, so events published from
    /// then on reach it.
    pub async fn start(
        auth: &AuthPeer,
        content_url: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let db = TestDb::new("quill_notification");
        let mut config = Config::from_env().expect("notification config");
        config.server.database.url = db.url.clone().into();
        config.server.database.max_connections = 5;
        config.auth_url = auth.url.clone();
        config.authn = auth.authn.clone();
        config.content_url = content_url.to_owned();
        config.smtp = None;
        config.mail_poll_interval = Duration::from_millis(200);
        tweak(&mut config);
        declare(&config).await;
        let server = TestServer::spawn::<server::Notification>(config.clone()).await;
        let (addr, channel) = (server.addr, server.channel.clone());
        Self {
            addr,
            channel,
            config,
            db,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel.clone())
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.server.stop().await;
    }
}

/// Consume from `broker`'s exchange, on a queue of its own (deleted with
/// it), with short retry delays.
pub fn use_broker(config: &mut Config, broker: &TestBroker) {
    config.events.amqp_url = broker.url.clone().into();
    config.events.exchange = broker.exchange();
    config.events_queue_prefix = broker.prefix.clone();
    config.events.max_attempts = 3;
    config.events.retry_delays = vec![Duration::from_millis(50), Duration::from_millis(100)];
    broker.track(config.topology());
}

/// Declares the queue and its bindings up front: an event published before
/// the consumer's first connection would otherwise be dropped.
async fn declare(config: &Config) {
    let connection = broker::connect(config.events.amqp_url.expose_secret(), "test-declare")
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    config.topology().declare(&channel).await.expect("declare");
    let _ = connection.close(200, "declared".into()).await;
}
