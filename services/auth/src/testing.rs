//! An auth server running in-process on an ephemeral port, on its own
//! database, Redis prefix and event exchange, for integration tests of this
//! and other crates.

use std::{net::SocketAddr, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use quill_events::testing::TestBroker;
use quill_platform::{
    grpc::ServiceChannel,
    service_identity::Service,
    testing::{self, AuthPeer, TestRedis},
};
use quill_proto::{
    auth::v1::{AuthResponse, RegisterRequest, auth_service_client::AuthServiceClient},
    events::v1::Envelope,
};
use quill_server::{
    ServiceConfig as _,
    testing::{TestDb, TestServer},
};
use serde_json::Value;
use tonic::transport::Channel;

use crate::{Config, server, tokens::AccessTokenIssuer};

pub struct TestAuth {
    /// First, so it stops before its database and broker are cleaned up.
    server: TestServer,
    pub addr: SocketAddr,
    pub channel: Channel,
    pub config: Config,
    pub redis: TestRedis,
    pub db: TestDb,
    /// The exchange auth publishes to and the prefix of the consumer queues
    /// it declares (`config.events.exchange`, `config.events_queue_prefix`);
    /// other servers of the same test consume from them.
    pub broker: TestBroker,
    /// The server's signing key, so tests can mint tokens auth never issued.
    pub signing_key_pem: String,
}

impl TestAuth {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with settings adjusted by `tweak` (short token lifetimes...).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new("quill_auth");
        let redis = TestRedis::new();
        let broker = TestBroker::new();
        let signing_key_pem = new_signing_key_pem();
        let mut config = Config::from_env().expect("auth config");
        config.signing_key_pem = Some(signing_key_pem.clone().into());
        config.server.database.url = db.url.clone().into();
        config.server.database.max_connections = 5;
        config.authn = testing::authn_config(&redis);
        broker.isolate(&mut config.events, &mut config.events_queue_prefix);
        tweak(&mut config);
        broker.track_catalog(&config.events, &config.events_queue_prefix);
        let server = TestServer::spawn::<server::Auth>(config.clone()).await;
        let (addr, channel) = (server.addr, server.channel.clone());
        Self {
            addr,
            channel,
            config,
            redis,
            db,
            broker,
            signing_key_pem,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the other servers of the test need to authenticate against
    /// this auth.
    pub fn peer(&self) -> AuthPeer {
        AuthPeer {
            url: self.url(),
            authn: self.config.authn.clone(),
        }
    }

    /// A client whose calls prove to come from `service`.
    pub fn client_as(&self, service: Service) -> AuthServiceClient<ServiceChannel> {
        AuthServiceClient::new(testing::as_service(self.channel.clone(), service))
    }

    pub fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    /// Registers a user through the API, as a front end would: the user
    /// and their first tokens.
    pub async fn register(&self, username: &str, email: &str, password: &str) -> AuthResponse {
        self.client()
            .register(RegisterRequest {
                email: email.to_owned(),
                username: username.to_owned(),
                password: password.to_owned(),
                client: None,
            })
            .await
            .expect("register")
            .into_inner()
    }

    /// A probe of the events auth publishes with these routing keys.
    pub async fn probe(&self, name: &str, keys: &[&str]) -> EventProbe {
        EventProbe::bind(&self.broker, name, keys).await
    }

    /// Signs arbitrary claims with the server's own key.
    pub fn sign(&self, claims: &Value) -> String {
        let issuer = AccessTokenIssuer::new(
            Some(&self.signing_key_pem),
            String::new(),
            String::new(),
            Duration::from_secs(1),
        )
        .expect("test key");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(issuer.kid().to_owned());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ed_pem(self.signing_key_pem.as_bytes()).expect("test key"),
        )
        .expect("sign")
    }

    /// Gives a user a role directly in the database (the arrange step for
    /// "an admin exists": the API only lets admins change roles).
    pub async fn set_role_in_db(&self, username: &str, role: &str) {
        let pool = sqlx::PgPool::connect(&self.db.url).await.expect("connect");
        sqlx::query("UPDATE users SET role = $2 WHERE username = $1")
            .bind(username)
            .bind(role)
            .execute(&pool)
            .await
            .expect("set role");
        pool.close().await;
        // Behind the API's back: drop the cached session states and
        // accounts, which still hold the old role, as the API's own role
        // change overwrites or invalidates them.
        self.redis.forget("session:").await;
        self.redis.forget("accounts:").await;
    }

    /// Stops the server and waits for it to drain; its database stays until
    /// this value drops.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }
}

/// A test's own queue on a [`TestBroker`]'s exchange, to see what gets
/// published there. Bind it before acting: the exchange drops what no queue
/// is bound to yet.
pub struct EventProbe {
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
    /// Events of a batch message not handed out yet.
    pending: std::sync::Mutex<std::collections::VecDeque<Envelope>>,
}

impl EventProbe {
    /// Queue `<prefix>.<name>` bound to `keys`; deleted with `broker`.
    pub async fn bind(broker: &TestBroker, name: &str, keys: &[&str]) -> Self {
        let topology = broker.topology(name, keys);
        let connection = quill_events::broker::connect(&broker.url, "test-probe")
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        topology.declare(&channel).await.expect("declare the probe");
        Self {
            connection,
            channel,
            queue: topology.queue,
            pending: Default::default(),
        }
    }

    /// The next event, waiting up to 10 s for it.
    pub async fn next(&self) -> Envelope {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("no event published within 10 s")
    }

    /// The next event, if one arrives within `wait`: one message's, or the
    /// next of a batch message's, in the batch's order.
    pub async fn next_within(&self, wait: Duration) -> Option<Envelope> {
        use lapin::options::BasicGetOptions;
        use quill_events::message;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let pending = self.pending.lock().expect("not poisoned").pop_front();
            if pending.is_some() {
                return pending;
            }
            let got = self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                let delivery = message.delivery;
                match message::decode(&delivery.properties, &delivery.data).expect("events") {
                    message::Events::One(envelope) => return Some(*envelope),
                    message::Events::Batch(batch) => {
                        self.pending.lock().expect("not poisoned").extend(batch);
                    }
                }
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "probe done".into()).await;
    }
}

fn new_signing_key_pem() -> String {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
        .to_pkcs8_pem(LineEnding::LF)
        .expect("encode key")
        .to_string()
}

/// The claims inside a token, for tests to alter and re-sign.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("jwt payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

/// A token with `alg: none` and no signature.
pub fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}
