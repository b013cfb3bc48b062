//! Isolation for integration tests against the real Redis (each test its own
//! key prefix, removed when the test ends), the servers of one test system,
//! and a TCP proxy for outage tests. The database and the broker have theirs
//! in `quill-server` and `quill-events`.

use std::net::SocketAddr;

use tokio::net::TcpListener;

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis key prefix whose keys are deleted when this value drops.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    pub fn new() -> Self {
        Self {
            url: redis_url(),
            prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl TestRedis {
    /// Deletes every key of this prefix whose name (after the prefix) starts
    /// with `kind`, as a Redis restart without persistence would.
    pub async fn forget(&self, kind: &str) {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}{kind}*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await
                .expect("DEL");
        }
    }
}

/// The service secret of every test system (tests that need another make
/// their own).
pub fn service_secret() -> crate::service_identity::ServiceSecret {
    crate::service_identity::ServiceSecret::new("quill test service secret, never for production")
        .expect("long enough")
}

/// The settings servers of one test need to authenticate with the same auth:
/// its Redis prefix (shared session cache) and the test service secret.
pub fn authn_config(redis: &TestRedis) -> crate::authn::AuthnConfig {
    crate::authn::AuthnConfig {
        redis_url: redis.url.clone().into(),
        redis_prefix: redis.prefix.clone(),
        service_secret: Some(service_secret()),
    }
}

/// A channel whose calls prove to come from `service` (for tests calling
/// internal RPCs as that service would).
pub fn as_service(
    channel: tonic::transport::Channel,
    service: crate::service_identity::Service,
) -> crate::grpc::ServiceChannel {
    crate::grpc::client(
        channel,
        &crate::service_identity::ServiceCredentials::new(service, &service_secret()),
    )
}

/// What the other servers of a test need from its auth server.
#[derive(Debug, Clone)]
pub struct AuthPeer {
    pub url: String,
    pub authn: crate::authn::AuthnConfig,
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}*", self.prefix));
        let _ = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(url)?.get_connection()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn)?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<()>(&mut conn)?;
            }
            Ok(())
        })
        .join();
    }
}

/// What a test's clean-up may fail with; it is best effort and ignored.
pub type CleanupError = Box<dyn std::error::Error + Send + Sync>;

/// Runs an async clean-up to completion from a `Drop`, which may run inside
/// or outside a runtime: on a thread of its own with a private runtime.
pub fn clean_up<F>(cleanup: F)
where
    F: std::future::Future<Output = Result<(), CleanupError>> + Send + 'static,
{
    let _ = std::thread::spawn(move || -> Result<(), CleanupError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(cleanup)
    })
    .join();
}

/// A listener on an ephemeral loopback port.
pub async fn ephemeral_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// A TCP proxy in front of a real server, for outage tests: [`TcpProxy::cut`]
/// drops every live connection and refuses new ones until
/// [`TcpProxy::restore`]. Stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    // Bumped on every cut; live pipes watch it and close. Dropping the
    // sender (with the proxy) closes them too.
    cuts: tokio::sync::watch::Sender<u64>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let (listener, addr) = ephemeral_listener().await;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let accept_loop = tokio::spawn({
            let cut = cut.clone();
            let cuts = cuts.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        // Refused: close at once, so the client sees the outage.
                        drop(inbound);
                        continue;
                    }
                    let mut cut_signal = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut_signal.changed() => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            cut,
            cuts,
            accept_loop,
        }
    }

    /// The address clients connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops live connections and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.cut();
    }
}
