//! Scale-out as a cluster sees it, on one machine: two replicas of every
//! service and two gateways as real processes, every caller balancing over
//! a static list of both replicas of its upstream (`just up-replicas 2`).
//! Under a steady REST load through both gateways:
//!
//! - calls reach both replicas of auth and of content, roughly evenly (read
//!   from each replica's own metrics);
//! - one content replica gets SIGTERM mid-load: it drains (NOT_SERVING for
//!   `SHUTDOWN_DELAY_SECS` while callers move away) and no request fails;
//!   restarted, it gets traffic again within seconds;
//! - the same replica gets SIGKILL: no read fails (reads are resent to the
//!   other replica), and at most the writes in flight on it do;
//! - every comment that exists is notified exactly once, by whichever
//!   notification replica took it off the shared queue (both take some),
//!   and pushed to the author's live streams on both gateways.
//!
//! DNS re-resolution is shown with a resolver the test controls in
//! quill-platform's `balance` tests; here the list is static.

use crate::processes_support;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use processes_support::{
    otlp::Receiver,
    prometheus::{self, Sample},
    system::{System, Topology},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Concurrent REST clients, spread over both gateways.
const WORKERS: usize = 6;
/// Calls each service's replicas must see together before their shares
/// are judged: from 40 up, a fair split falls below a quarter less often
/// than 1 time in 1,000. (With only `GET /user` for auth, which the gateway
/// answers from Redis, auth saw 18 calls, and 4 and 14 was a fair split's
/// 1-in-30 draw.)
const MEASURED_CALLS: f64 = 40.0;
/// How long a callers' view of a restarted replica may lag: one health
/// check period (2 s) and a margin for a loaded 2-core machine.
const REJOIN_WITHIN: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(30);
const CONTENT_SERVICE: &str = "quill.content.v1.ContentService";
const AUTH_SERVICE: &str = "quill.auth.v1.AuthService";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_spreads_over_replicas_and_survives_a_drain_and_a_kill() {
    let (otlp, _receiver) = Receiver::start().await;
    let mut system = System::start_with(
        &otlp,
        Topology {
            replicas: 2,
            gateways: 2,
            env: vec![
                // Callers re-check health every 2 s: a draining replica
                // keeps serving longer than that (Kubernetes uses 5 s).
                ("SHUTDOWN_DELAY_SECS", "3".into()),
                ("RATE_LIMIT_WRITES_PER_USER", "100000".into()),
            ],
        },
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let fixture = Arc::new(Fixture::create(&system, &http).await);
    let streams: Vec<Stream> = system
        .gateways
        .iter()
        .map(|gateway| Stream::open(&http, *gateway, &fixture.author))
        .collect();
    for stream in &streams {
        stream.wait_until_open().await;
    }

    let load = Load::start(&http, &system.gateways, &fixture);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Both replicas of each service get a fair share.
    for (service, grpc) in [("content", CONTENT_SERVICE), ("auth", AUTH_SERVICE)] {
        let first = served(&system, service, grpc).await;
        let second = served(&system, &format!("{service}-2"), grpc).await;
        eprintln!("{service}: {first} and {second} calls");
        assert!(
            first + second >= MEASURED_CALLS,
            "{service} saw {} calls, too few to tell a spread",
            first + second
        );
        let least = (first + second) * 0.25;
        assert!(
            first >= least && second >= least,
            "{service}'s replicas served {first} and {second} calls: not spread"
        );
    }

    // A rolling restart of one content replica: nothing may fail.
    load.enter(Phase::Drain);
    let drained = tokio::task::block_in_place(|| system.signal("content-2", libc::SIGTERM));
    assert!(
        drained.is_some_and(|status| status.success()),
        "content-2 did not drain cleanly: {drained:?}"
    );
    let rejoined = restart_and_wait_for_traffic(&mut system, "content-2").await;
    eprintln!("content-2 served again {rejoined:?} after its restart (SIGTERM)");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A crash: only what was in flight on it may fail, and no read.
    load.enter(Phase::Kill);
    tokio::task::block_in_place(|| system.signal("content-2", libc::SIGKILL));
    let rejoined = restart_and_wait_for_traffic(&mut system, "content-2").await;
    eprintln!("content-2 served again {rejoined:?} after its restart (SIGKILL)");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let report = load.stop().await;
    eprintln!("{report}");
    report.assert_tolerable();

    // Every comment that exists is notified once: none lost in the relay
    // hand-over or the crash, none doubled by a redelivery.
    let comments = fixture.comment_count(&system, &http).await;
    assert!(
        comments >= report.comments_created
            && comments <= report.comments_created + report.write_failures(),
        "{comments} comments exist, {} were answered 200 and {} writes failed",
        report.comments_created,
        report.write_failures()
    );
    fixture.wait_for_unread(&system, &http, comments + 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fixture.unread(&system, &http).await,
        comments + 1,
        "the welcome and one notification per comment, no more"
    );

    // Competing consumers: the two notification replicas shared the queue.
    let queue = system.queue("notification");
    let mut consumed = Vec::new();
    for process in ["notification", "notification-2"] {
        let samples = scrape(&system, process).await;
        consumed.push(count(
            &samples,
            "events_consumed_total",
            &[
                ("queue", &queue),
                ("routing_key", "comment.added"),
                ("outcome", "ok"),
            ],
        ));
    }
    eprintln!("comment.added applied by the notification replicas: {consumed:?}");
    assert!(
        consumed.iter().all(|n| *n > 0.0),
        "one replica took every event: {consumed:?}"
    );
    assert_eq!(
        consumed.iter().sum::<f64>(),
        comments as f64,
        "applied once each"
    );

    // Live pushes on both gateways, whichever replica's hub they came from.
    for stream in &streams {
        stream.wait_for_comments(comments).await;
    }

    for (name, exit) in system.stop() {
        assert!(
            exit.is_some_and(|status| status.success()),
            "quill-{name} did not exit cleanly on SIGTERM: {exit:?}"
        );
    }
}

/// A user who writes an article, and readers who comment on it.
struct Fixture {
    author: User,
    slug: String,
    commenters: Vec<User>,
}

struct User {
    username: String,
    token: String,
}

impl Fixture {
    async fn create(system: &System, http: &reqwest::Client) -> Self {
        let author = register(system, http).await;
        let mut commenters = Vec::new();
        for _ in 0..3 {
            commenters.push(register(system, http).await);
        }
        let article = json!({"article": {
            "title": format!("Replicas {}", uuid::Uuid::new_v4().simple()),
            "description": "load",
            "body": "Comments welcome.",
        }});
        let (status, body) = send(
            http,
            system.gateway,
            Method::POST,
            "/api/articles",
            Some(&author.token),
            Some(&article),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let slug = body["article"]["slug"].as_str().expect("slug").to_owned();
        // The author's welcome arrives before the load starts counting.
        let fixture = Self {
            author,
            slug,
            commenters,
        };
        fixture.wait_for_unread(system, http, 1).await;
        fixture
    }

    /// Every comment on the article, page by page.
    async fn comment_count(&self, system: &System, http: &reqwest::Client) -> usize {
        let mut count = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/articles/{}/comments", self.slug);
            if let Some(cursor) = &cursor {
                path.push_str(&format!("?cursor={cursor}"));
            }
            let (status, body) = send(http, system.gateway, Method::GET, &path, None, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            count += body["comments"].as_array().expect("comments").len();
            match body["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return count,
            }
        }
    }

    async fn unread(&self, system: &System, http: &reqwest::Client) -> usize {
        let (status, body) = send(
            http,
            system.gateway,
            Method::GET,
            "/api/notifications/unread-count",
            Some(&self.author.token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let count = body["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("no count: {body}"));
        usize::try_from(count).expect("count fits")
    }

    async fn wait_for_unread(&self, system: &System, http: &reqwest::Client, expected: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let unread = self.unread(system, http).await;
            if unread == expected {
                return;
            }
            assert!(
                unread < expected && Instant::now() < deadline,
                "the author has {unread} unread notifications, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn register(system: &System, http: &reqwest::Client) -> User {
    let username = format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let user = json!({"user": {
        "username": username,
        "email": format!("{username}@example.com"),
        "password": "a-long-enough-secret",
    }});
    let (status, body) = send(
        http,
        system.gateway,
        Method::POST,
        "/api/users",
        None,
        Some(&user),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    User {
        username,
        token: body["user"]["token"].as_str().expect("token").to_owned(),
    }
}

async fn send(
    http: &reqwest::Client,
    gateway: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, format!("http://{gateway}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Token {token}"));
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Which part of the test a request ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Steady = 0,
    Drain = 1,
    Kill = 2,
}

impl Phase {
    fn from_u8(n: u8) -> Self {
        match n {
            0 => Self::Steady,
            1 => Self::Drain,
            _ => Self::Kill,
        }
    }
}

struct Failure {
    phase: Phase,
    write: bool,
    what: String,
}

#[derive(Default)]
struct Tally {
    requests: usize,
    comments_created: usize,
    failures: Vec<Failure>,
}

/// `WORKERS` clients in a loop of reads (articles, one article, profile,
/// current user) and writes (a comment), alternating between the gateways.
struct Load {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(http: &reqwest::Client, gateways: &[SocketAddr], fixture: &Arc<Fixture>) -> Self {
        let phase = Arc::new(AtomicU8::new(Phase::Steady as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let workers = (0..WORKERS)
            .map(|worker| {
                let (http, gateways, fixture) =
                    (http.clone(), gateways.to_vec(), Arc::clone(fixture));
                let (phase, stop, tally) =
                    (Arc::clone(&phase), Arc::clone(&stop), Arc::clone(&tally));
                tokio::spawn(async move {
                    for n in worker.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let gateway = gateways[n % gateways.len()];
                        let outcome = request(&http, gateway, &fixture, worker, n).await;
                        // A call sent just before the kill and cut off by it
                        // is the kill's.
                        let ended_in = Phase::from_u8(phase.load(Ordering::Relaxed));
                        let mut tally = tally.lock().expect("tally");
                        tally.requests += 1;
                        match outcome {
                            Ok(Some(())) => tally.comments_created += 1,
                            Ok(None) => {}
                            Err((write, what)) => tally.failures.push(Failure {
                                phase: ended_in,
                                write,
                                what,
                            }),
                        }
                    }
                })
            })
            .collect();
        Self {
            phase,
            stop,
            tally,
            workers,
        }
    }

    fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        let tally = std::mem::take(&mut *self.tally.lock().expect("tally"));
        Report {
            requests: tally.requests,
            comments_created: tally.comments_created,
            failures: tally.failures,
        }
    }
}

/// One request of the mix: `Ok(Some(()))` a comment was created, `Ok(None)`
/// a read answered, `Err((is_write, what))` a failure.
async fn request(
    http: &reqwest::Client,
    gateway: SocketAddr,
    fixture: &Fixture,
    worker: usize,
    n: usize,
) -> Result<Option<()>, (bool, String)> {
    let reader = &fixture.commenters[worker % fixture.commenters.len()];
    let (method, path, token, body) = match n % 10 {
        0 | 5 => (
            Method::GET,
            format!("/api/articles/{}", fixture.slug),
            None,
            None,
        ),
        1 | 6 => (
            Method::GET,
            "/api/articles?limit=5".to_owned(),
            Some(&reader.token),
            None,
        ),
        // The gateway answers this one from Redis, so auth seldom sees it...
        2 => (
            Method::GET,
            "/api/user".to_owned(),
            Some(&reader.token),
            None,
        ),
        // ...and this one always reaches auth: its replicas' shares are
        // measured on real traffic.
        7 => (
            Method::GET,
            "/api/user/sessions".to_owned(),
            Some(&reader.token),
            None,
        ),
        3 | 8 => (
            Method::GET,
            format!("/api/profiles/{}", fixture.author.username),
            Some(&reader.token),
            None,
        ),
        _ => (
            Method::POST,
            format!("/api/articles/{}/comments", fixture.slug),
            Some(&reader.token),
            Some(json!({"comment": {"body": format!("comment {n} from worker {worker}")}})),
        ),
    };
    let write = method == Method::POST;
    let mut request = http.request(method.clone(), format!("http://{gateway}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Token {token}"));
    }
    if let Some(body) = &body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| (write, format!("{method} {path} via {gateway}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err((
            write,
            format!("{method} {path} via {gateway}: {status} {text}"),
        ));
    }
    Ok(write.then_some(()))
}

struct Report {
    requests: usize,
    comments_created: usize,
    failures: Vec<Failure>,
}

impl Report {
    fn write_failures(&self) -> usize {
        self.failures.iter().filter(|f| f.write).count()
    }

    /// Steady state and a drain: no failure. A kill: no failed read, and
    /// no more failed writes than could have been in flight on the killed
    /// replica (one per client).
    fn assert_tolerable(&self) {
        let intolerable: Vec<&Failure> = self
            .failures
            .iter()
            .filter(|f| f.phase != Phase::Kill || !f.write)
            .collect();
        assert!(intolerable.is_empty(), "requests failed:\n{self}");
        assert!(
            self.write_failures() <= WORKERS,
            "more writes failed than were in flight:\n{self}"
        );
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} comments created, {} failed",
            self.requests,
            self.comments_created,
            self.failures.len(),
        )?;
        for failure in &self.failures {
            let kind = if failure.write { "write" } else { "read" };
            write!(f, "\n  {:?} {kind}: {}", failure.phase, failure.what)?;
        }
        Ok(())
    }
}

/// The author's live stream on one gateway, collecting the ids of the
/// comment notifications it pushes.
struct Stream {
    gateway: SocketAddr,
    opened: Arc<AtomicBool>,
    comments: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Stream {
    fn open(http: &reqwest::Client, gateway: SocketAddr, user: &User) -> Self {
        let opened = Arc::new(AtomicBool::new(false));
        let comments = Arc::new(Mutex::new(Vec::new()));
        // The stream lives longer than the client's request timeout.
        let request = http
            .get(format!("http://{gateway}/api/notifications/stream"))
            .header("authorization", format!("Token {}", user.token))
            .timeout(Duration::from_secs(600));
        let (seen, pushed) = (Arc::clone(&opened), Arc::clone(&comments));
        let reader = tokio::spawn(async move {
            let mut response = request.send().await.expect("open the stream");
            assert_eq!(response.status(), StatusCode::OK);
            seen.store(true, Ordering::Relaxed);
            let mut pending = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    if let Some(id) = comment_id(&event) {
                        pushed.lock().expect("pushed").push(id);
                    }
                }
            }
        });
        Self {
            gateway,
            opened,
            comments,
            reader,
        }
    }

    async fn wait_until_open(&self) {
        let deadline = Instant::now() + WAIT;
        while !self.opened.load(Ordering::Relaxed) {
            assert!(
                Instant::now() < deadline,
                "the stream on {} did not open",
                self.gateway
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `expected` comment notifications arrived, each once.
    async fn wait_for_comments(&self, expected: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let pushed = self.comments.lock().expect("pushed").clone();
            let distinct: BTreeSet<&String> = pushed.iter().collect();
            assert_eq!(
                distinct.len(),
                pushed.len(),
                "a push came twice on {}",
                self.gateway
            );
            if pushed.len() == expected {
                return;
            }
            assert!(
                pushed.len() < expected && Instant::now() < deadline,
                "the stream on {} pushed {} comment notifications, expected {expected}",
                self.gateway,
                pushed.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The notification id of an SSE event carrying a comment notification.
fn comment_id(event: &str) -> Option<String> {
    let data: String = event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    let notification: Value = serde_json::from_str(&data).ok()?;
    (notification["kind"] == "comment").then(|| notification["id"].to_string())
}

/// Restarts `process` and waits until callers send it content calls again;
/// how long that took.
async fn restart_and_wait_for_traffic(system: &mut System, process: &str) -> Duration {
    system.restart(process).await;
    let restarted = Instant::now();
    loop {
        if served(system, process, CONTENT_SERVICE).await > 0.0 {
            return restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < REJOIN_WITHIN,
            "{process} got no calls within {REJOIN_WITHIN:?} of its restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Calls of `service` that `process` has answered since it started.
async fn served(system: &System, process: &str, service: &str) -> f64 {
    let samples = scrape(system, process).await;
    samples
        .iter()
        .filter(|s| {
            s.name == "rpc_server_call_duration_seconds_count"
                && s.labels
                    .get("rpc_method")
                    .is_some_and(|m| m.starts_with(&format!("{service}/")))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(system: &System, process: &str) -> Vec<Sample> {
    prometheus::parse(&system.scrape(process).await)
}

fn count(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus::value(samples, name, labels).unwrap_or(0.0)
}
