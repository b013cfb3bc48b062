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
