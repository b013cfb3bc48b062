//! Health tells readiness from liveness: while auth's database is out of
//! reach, its service reports NOT_SERVING (balancers and Kubernetes send
//! calls elsewhere) and the process stays alive (`""` SERVING); when the
//! database is back, so is the service.

use std::{net::SocketAddr, time::Duration};

use quill_auth::testing::TestAuth;
use quill_platform::testing::TcpProxy;
use quill_server::testing::postgres_server_url;
use secrecy::ExposeSecret;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const SERVICE: &str = "quill.auth.v1.AuthService";

async fn status(channel: &Channel, service: &str) -> ServingStatus {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

async fn until(channel: &Channel, wanted: ServingStatus) {
    for _ in 0..150 {
        if status(channel, SERVICE).await == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{SERVICE} did not become {wanted:?} within 15 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_liveness_does_not() {
    let server = postgres_server_url();
    let authority = server.rsplit('@').next().expect("host:port");
    let upstream: SocketAddr = authority.parse().expect("PostgreSQL at an IP:port");
    let proxy = TcpProxy::start(upstream).await;
    let auth = TestAuth::start_with(|c| {
        let via_proxy = c
            .server
            .database
            .url
            .expose_secret()
            .replace(authority, &proxy.addr().to_string());
        c.server.database.url = via_proxy.into();
    })
    .await;
    assert_eq!(status(&auth.channel, SERVICE).await, ServingStatus::Serving);

    proxy.cut();
    until(&auth.channel, ServingStatus::NotServing).await;
    assert_eq!(
        status(&auth.channel, "").await,
        ServingStatus::Serving,
        "still alive"
    );

    proxy.restore();
    until(&auth.channel, ServingStatus::Serving).await;
}

/// SIGTERM on a replica: it reports NOT_SERVING at once and keeps
/// answering for its drain delay, so callers move their calls away before
/// it stops listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_replica_answers_not_ready_until_it_stops_listening() {
    use quill_proto::auth::v1::{GetPublicKeysRequest, auth_service_client::AuthServiceClient};
    use quill_server::testing::TestServer;

    let auth = TestAuth::start().await;
    // A second replica of the same auth: same database, same keys.
    let replica = TestServer::spawn_with_drain_delay::<quill_auth::server::Auth>(
        auth.config.clone(),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        status(&replica.channel, SERVICE).await,
        ServingStatus::Serving
    );

    replica.begin_shutdown();
    until(&replica.channel, ServingStatus::NotServing).await;
    AuthServiceClient::new(replica.channel.clone())
        .get_public_keys(GetPublicKeysRequest {})
        .await
        .expect("still answering while draining");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = tonic::transport::Endpoint::from_shared(replica.url())
        .expect("url")
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await;
    assert!(fresh.is_err(), "still listening after the drain delay");
}

/// A client that opened an HTTP/2 connection and went silent (it never
/// answers the shutdown's PING, never closes) does not hold the drain: the
/// server is done once no call is in flight, not when every client has
/// gone (hyper#4170), so a rolling restart is not stretched to its grace
/// period and killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_connection_does_not_hold_the_drain() {
    use tokio::io::AsyncWriteExt as _;

    let mut auth = TestAuth::start().await;
    let mut silent = tokio::net::TcpStream::connect(auth.addr)
        .await
        .expect("connect");
    // The client connection preface and an empty SETTINGS frame; then nothing.
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::time::Instant::now();
    auth.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the drain took {:?}",
        stopping.elapsed()
    );
    drop(silent);
}
