//! Client-side balancing against real gRPC servers on loopback: calls
//! spread over every replica, follow the name as it resolves, and skip a
//! replica whose health says it does not serve.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use quill_platform::{
    balance::{Resolver, Upstream},
    testing::ephemeral_listener,
};
use tokio::sync::watch;
use tokio_stream::{
    Stream, StreamExt as _,
    wrappers::{TcpListenerStream, WatchStream},
};
use tonic::{Request, Response, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_client::HealthClient,
    health_server::{Health, HealthServer},
};

/// The service whose health the balancer checks.
const SERVICE: &str = "quill.test.v1.Replicated";
/// The "call" the tests count: a health check for this name.
const PAYLOAD: &str = "payload";
const REFRESH: Duration = Duration::from_millis(200);

/// A replica: answers health checks, counting those that are calls, and
/// health watches.
#[derive(Clone)]
struct Replica {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    status: Arc<watch::Sender<ServingStatus>>,
}

#[tonic::async_trait]
impl Health for Replica {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if request.get_ref().service == PAYLOAD {
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
        let status = *self.status.borrow();
        Ok(Response::new(HealthCheckResponse {
            status: status.into(),
        }))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = WatchStream::new(self.status.subscribe()).map(|status| {
            Ok(HealthCheckResponse {
                status: status.into(),
            })
        });
        Ok(Response::new(Box::pin(statuses)))
    }
}

impl Replica {
    async fn start() -> Self {
        let (listener, addr) = ephemeral_listener().await;
        let replica = Self {
            addr,
            calls: Arc::default(),
            status: Arc::new(watch::Sender::new(ServingStatus::Serving)),
        };
        let service = HealthServer::new(replica.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        replica
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set(&self, status: ServingStatus) {
        self.status.send_replace(status);
    }
}

async fn call(channel: &Channel) {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: PAYLOAD.to_owned(),
        })
        .await
        .expect("a call through the balancer");
}

async fn calls(channel: &Channel, n: usize) {
    for _ in 0..n {
        call(channel).await;
    }
}

/// Calls until `replica` has received one (the balancer picked it up), at
/// most 5 s.
async fn until_reached(channel: &Channel, replica: &Replica) {
    let before = replica.calls();
    for _ in 0..500 {
        call(channel).await;
        if replica.calls() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} got no call within 5 s", replica.addr);
}

#[tokio::test]
async fn calls_spread_over_every_replica_of_a_list() {
    let (a, b) = (Replica::start().await, Replica::start().await);
    let urls = format!("{}, {}", a.url(), b.url());
    let channel = Upstream::parse("TEST_URL", &urls, SERVICE)
        .expect("two URLs")
        .refreshing_every(REFRESH)
        .channel();
    until_reached(&channel, &a).await;
    until_reached(&channel, &b).await;
    let (before_a, before_b) = (a.calls(), b.calls());
    calls(&channel, 200).await;
    let (to_a, to_b) = (a.calls() - before_a, b.calls() - before_b);
    assert_eq!(to_a + to_b, 200);
    assert!(to_a >= 40 && to_b >= 40, "uneven: {to_a} / {to_b}");
}

#[tokio::test]
async fn replicas_join_and_leave_as_the_name_resolves() {
    let (a, b) = (Replica::start().await, Replica::start().await);
    let answer = Arc::new(Mutex::new(vec![a.addr]));
    let resolver: Resolver = {
        let answer = Arc::clone(&answer);
        Arc::new(move |_name| {
            let addrs = answer.lock().expect("answer").clone();
            Box::pin(async move { Ok(addrs) })
        })
    };
    let channel = Upstream::parse("TEST_URL", "http://quill-test:50051", SERVICE)
        .expect("a URL")
        .with_resolver(resolver)
        .refreshing_every(REFRESH)
        .channel();
    calls(&channel, 20).await;
    assert_eq!(
        (a.calls(), b.calls()),
        (20, 0),
        "only what the name resolves to"
    );

    // A pod added behind the name gets calls within a refresh or two.
    answer.lock().expect("answer").push(b.addr);
    until_reached(&channel, &b).await;

    // A pod gone from the name gets none once the balancer has seen it go.
    *answer.lock().expect("answer") = vec![b.addr];
    tokio::time::sleep(REFRESH * 3).await;
    let before = a.calls();
    calls(&channel, 50).await;
    assert_eq!(
        a.calls(),
        before,
        "a replica no longer resolved still got calls"
    );
}

#[tokio::test]
async fn a_replica_that_does_not_serve_gets_no_calls() {
    let (a, b) = (Replica::start().await, Replica::start().await);
    let urls = format!("{},{}", a.url(), b.url());
    let channel = Upstream::parse("TEST_URL", &urls, SERVICE)
        .expect("two URLs")
        .refreshing_every(REFRESH)
        .channel();
    until_reached(&channel, &a).await;
    until_reached(&channel, &b).await;

    a.set(ServingStatus::NotServing);
    tokio::time::sleep(REFRESH * 3).await;
    let before = a.calls();
    calls(&channel, 50).await;
    assert_eq!(a.calls(), before, "a draining replica still got calls");

    a.set(ServingStatus::Serving);
    until_reached(&channel, &a).await;
}

#[tokio::test]
async fn a_replica_that_stops_serving_leaves_at_once_not_at_the_next_poll() {
    let (a, b) = (Replica::start().await, Replica::start().await);
    let urls = format!("{},{}", a.url(), b.url());
    // Polling alone would notice a minute later.
    let channel = Upstream::parse("TEST_URL", &urls, SERVICE)
        .expect("two URLs")
        .refreshing_every(Duration::from_secs(60))
        .channel();
    until_reached(&channel, &a).await;
    until_reached(&channel, &b).await;

    a.set(ServingStatus::NotServing);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = a.calls();
    calls(&channel, 50).await;
    assert_eq!(a.calls(), before, "a draining replica still got calls");
}
