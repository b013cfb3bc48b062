//! `quill-bench` (`just bench`): starts auth, content, notification and the
//! gateway in this process against the real PostgreSQL, Redis and RabbitMQ
//! (each on throwaway databases, key prefix and queues, like the tests) and
//! prints:
//!
//! 1. the latency from a REST write (a comment on someone's article) to the
//!    notification arriving on the article author's SSE stream, p50/p99/max,
//!    on an idle system, while other users publish articles at a paced
//!    `PACED_WRITES` per second (load with headroom left), and while they
//!    publish as fast as `WRITERS` connections can (both cores saturated,
//!    so every request queues); the writes per second are printed, and
//!    where each write's time went ([`latency_stages`]);
//! 2. the sustained events per second one notification consumer applies,
//!    from a queue filled before it starts;
//! 3. what one `GET /user` costs past the gateway: Redis commands and gRPC
//!    calls per request, counted from Redis' own statistics and the
//!    gateway's client metrics, and its latency;
//! 4. what gzip and zstd would cost and save on gRPC list pages
//!    ([`grpc_compression`]).
//!
//! Figures depend on the machine; compare runs on one machine only.

// Printing the figures is this program's whole output.
#![allow(clippy::print_stdout)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::StreamExt;
use lapin::{BasicProperties, options::BasicPublishOptions};
use prost::Message;
use quill_auth::testing::TestAuth;
use quill_content::testing::TestContent;
use quill_events::{broker, new_envelope, testing::TestBroker};
use quill_notification::testing::{TestNotification, use_broker};
use quill_platform::{shutdown::CancellationToken, testing::ephemeral_listener};
use quill_proto::events::v1::{UserFollowed, envelope::Payload};
use quill_server::ServiceConfig as _;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod grpc_compression;
mod latency_stages;

/// Comments timed per load: the p99 of 1,000 is their tenth worst, where
/// 200 made it the second worst, a figure one stall could move.
const LATENCY_SAMPLES: usize = 1_000;
const THROUGHPUT_EVENTS: usize = 5_000;
const HOP_REQUESTS: usize = 500;
/// Connections publishing articles while the latency under load is taken.
const WRITERS: usize = 16;
/// Articles per second of the paced load: about half of what this 2-core
/// machine sustains.
const PACED_WRITES: u32 = 500;

/// The write load while the latency is taken.
#[derive(Clone, Copy)]
enum Load {
    Idle,
    /// `WRITERS` connections, each starting its next article at its own
    /// share of this rate (or as soon as its last is answered, if later).
    Paced(u32),
    /// `WRITERS` connections, each starting its next article as soon as
    /// its last is answered.
    Saturating,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    for load in [Load::Idle, Load::Paced(PACED_WRITES), Load::Saturating] {
        let LatencyRun {
            latencies,
            answers,
            writes,
            stages,
        } = rest_to_notification_latency(LATENCY_SAMPLES, load).await?;
        let load = match load {
            Load::Idle => "idle system".to_owned(),
            Load::Paced(rate) => format!(
                "while {WRITERS} connections publish articles paced at {rate}/s, {writes:.0} writes/s"
            ),
            Load::Saturating => format!(
                "while {WRITERS} connections publish articles as fast as answered, {writes:.0} writes/s"
            ),
        };
        println!(
            "REST comment -> SSE notification ({} samples, {load}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; the comment's own answer p50 {:.1} ms, p99 {:.1} ms",
            latencies.len(),
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(percentile(&latencies, 1.0)),
            ms(percentile(&answers, 0.50)),
            ms(percentile(&answers, 0.99)),
        );
        println!(
            "  where it went (p50 / p99): to content's transaction {}; to the relay's claim {}; to the consumer's transaction {}; to the SSE stream {}",
            p50_p99(&stages.to_write),
            p50_p99(&stages.to_relay),
            p50_p99(&stages.to_consumer),
            p50_p99(&stages.to_stream),
        );
    }
    let (elapsed, rate) = consumer_throughput(THROUGHPUT_EVENTS).await?;
    println!(
        "one notification consumer: {THROUGHPUT_EVENTS} queued user.followed events drained in {:.2} s after start-up = {rate:.0} events/s",
        elapsed.as_secs_f64()
    );
    let hops = per_hop_cost(HOP_REQUESTS).await?;
    println!(
        "GET /user ({HOP_REQUESTS} in a row, session cached): {:.2} Redis commands and {:.2} gRPC calls per request, p50 {:.2} ms, p99 {:.2} ms",
        hops.redis_commands,
        hops.grpc_calls,
        ms(percentile(&hops.latencies, 0.50)),
        ms(percentile(&hops.latencies, 0.99)),
    );
    for line in grpc_compression::report() {
        println!("gRPC compression, {line}");
    }
    Ok(())
}

/// The whole system, wired as in production but on ephemeral ports.
struct System {
    // Dropped in this order: consumers before auth, whose broker clean-up
    // deletes the queues.
    notification: TestNotification,
    content: TestContent,
    _auth: TestAuth,
    gateway: SocketAddr,
    http: reqwest::Client,
    /// Stops the gateway when the system is dropped.
    _stop: tokio_util::sync::DropGuard,
}

impl System {
    async fn start() -> anyhow::Result<Self> {
        // Production's outbox poll interval: the relay's idle wait is most
        // of the latency, so measuring with the tests' 20 ms would flatter it.
        let poll = quill_events::EventsConfig::default().relay_poll_interval;
        let auth = TestAuth::start_with(|c| c.events.relay_poll_interval = poll).await;
        let content = TestContent::start_with(&auth.peer(), |c| {
            c.events.exchange = auth.config.events.exchange.clone();
            c.events_queue_prefix = auth.config.events_queue_prefix.clone();
            c.events.relay_poll_interval = poll;
            // The write load is one user's, far past a user's budget.
            c.writes_per_user.limit = u32::MAX;
        })
        .await;
        let notification = TestNotification::start(&auth.peer(), &content.url(), |c| {
            use_broker(c, &auth.broker);
        })
        .await;
        let mut config = quill_gateway::Config::from_env()?;
        config.auth_url = auth.url();
        config.content_url = content.url();
        config.notification_url = notification.url();
        config.authn = auth.config.authn.clone();
        config.uploads.location = std::env::temp_dir()
            .join("quill-bench-uploads")
            .display()
            .to_string();
        let (listener, gateway) = ephemeral_listener().await;
        let stop = CancellationToken::new();
        tokio::spawn(quill_gateway::server::run(config, listener, stop.clone()));
        let system = Self {
            _auth: auth,
            content,
            notification,
            gateway,
            http: reqwest::Client::new(),
            _stop: stop.drop_guard(),
        };
        for _ in 0..200 {
            if system
                .http
                .get(system.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(system);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the system did not become ready")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> anyhow::Result<Value> {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Token {token}"));
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {body}");
        }
        Ok(body)
    }

    async fn register(&self, name: &str) -> anyhow::Result<String> {
        let body = self
            .post(
                "/api/users",
                None,
                json!({"user": {"username": name, "email": format!("{name}@bench.example"), "password": "bench-password"}}),
            )
            .await?;
        Ok(body["user"]["token"].as_str().context("token")?.to_owned())
    }
}

/// One latency measurement under one load.
struct LatencyRun {
    /// From sending each comment to its notification on the SSE stream.
    latencies: Vec<Duration>,
    /// From sending each comment to its own REST answer.
    answers: Vec<Duration>,
    /// Articles per second the load published meanwhile (none when idle).
    writes: f64,
    stages: latency_stages::Stages,
}

async fn rest_to_notification_latency(samples: usize, load: Load) -> anyhow::Result<LatencyRun> {
    let system = System::start().await?;
    let author = system.register("author").await?;
    let reader = system.register("reader").await?;
    let article = system
        .post(
            "/api/articles",
            Some(&author),
            json!({"article": {"title": "Benchmarks", "description": "d", "body": "b"}}),
        )
        .await?;
    let slug = article["article"]["slug"]
        .as_str()
        .context("slug")?
        .to_owned();

    let mut arrivals = sse_arrivals(&system, &author).await?;
    let path = format!("/api/articles/{slug}/comments");
    let comment = |i: usize| {
        system.post(
            &path,
            Some(&reader),
            json!({"comment": {"body": format!("comment {i}")}}),
        )
    };
    // Warm-up: the stream is live once the first event arrives.
    comment(0).await?;
    tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
        .await
        .context("no notification within 30 s")?;

    let load = WriteLoad::start(&system, load).await?;
    let mut latencies = Vec::with_capacity(samples);
    let mut answers = Vec::with_capacity(samples);
    let mut sent = Vec::with_capacity(samples);
    for i in 1..=samples {
        let started = Instant::now();
        sent.push(chrono::Utc::now());
        comment(i).await?;
        answers.push(started.elapsed());
        let arrived = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .context("no notification within 10 s")?
            .context("stream ended")?;
        latencies.push(arrived.duration_since(started));
    }
    let writes = load.stop().await?;
    let stages = latency_stages::measure(
        &system.content.db.url,
        &system.notification.db.url,
        &sent,
        &latencies,
    )
    .await?;
    Ok(LatencyRun {
        latencies,
        answers,
        writes,
        stages,
    })
}

/// Connections publishing articles as one user (whom nobody follows, so no
/// notification of theirs reaches the measured stream) until stopped.
struct WriteLoad {
    stop: CancellationToken,
    writers: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
    started: Instant,
}

impl WriteLoad {
    async fn start(system: &System, load: Load) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let (writers, pace) = match load {
            Load::Idle => (0, None),
            Load::Paced(rate) => (
                WRITERS,
                Some(Duration::from_secs_f64(WRITERS as f64 / f64::from(rate))),
            ),
            Load::Saturating => (WRITERS, None),
        };
        let token = match writers {
            0 => String::new(),
            _ => system.register("loader").await?,
        };
        let writers = (0..writers)
            .map(|w| {
                let (http, url, token, stop) = (
                    system.http.clone(),
                    system.url("/api/articles"),
                    token.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let mut written = 0u64;
                    let mut ticks = pace.map(|period| {
                        // Spread over the period, not all at once.
                        let first =
                            tokio::time::Instant::now() + period.mul_f64(w as f64 / WRITERS as f64);
                        let mut ticks = tokio::time::interval_at(first, period);
                        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        ticks
                    });
                    while !stop.is_cancelled() {
                        if let Some(ticks) = &mut ticks {
                            tokio::select! {
                                _ = ticks.tick() => {}
                                () = stop.cancelled() => break,
                            }
                        }
                        let body = json!({"article": {
                            "title": format!("Load {w} {written}"),
                            "description": "written under load",
                            "body": "Body text for a load-test article.",
                            "tagList": ["bench", "load"],
                        }});
                        let response = http
                            .post(&url)
                            .header("authorization", format!("Token {token}"))
                            .json(&body)
                            .send()
                            .await?;
                        if !response.status().is_success() {
                            bail!("POST /api/articles under load: {}", response.status());
                        }
                        written += 1;
                    }
                    Ok(written)
                })
            })
            .collect();
        Ok(Self {
            stop,
            writers,
            started: Instant::now(),
        })
    }

    /// Articles per second over the run; an error if a writer failed, since
    /// the latencies were then not taken under the load claimed.
    async fn stop(self) -> anyhow::Result<f64> {
        self.stop.cancel();
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut written = 0;
        for writer in self.writers {
            written += writer.await??;
        }
        Ok(written as f64 / elapsed)
    }
}

struct HopCost {
    redis_commands: f64,
    grpc_calls: f64,
    latencies: Vec<Duration>,
}

/// `requests` sequential `GET /user` after one that fills the session
/// cache and the gateway's cache of accounts. Nothing else talks to Redis
/// meanwhile (the bench's system is idle), so the server's command count
/// is theirs, less the first `INFO` (a command is counted once it has run,
/// so the second is not).
async fn per_hop_cost(requests: usize) -> anyhow::Result<HopCost> {
    let system = System::start().await?;
    let token = system.register("hops").await?;
    let get = || {
        system
            .http
            .get(system.url("/api/user"))
            .header("authorization", format!("Token {token}"))
            .send()
    };
    get().await?.error_for_status()?;
    let redis = redis::Client::open(quill_platform::testing::redis_url())?;
    let mut redis = redis.get_multiplexed_async_connection().await?;
    let commands_before = commands_processed(&mut redis).await?;
    let calls_before = client_calls();
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        get().await?.error_for_status()?;
        latencies.push(started.elapsed());
    }
    let commands = commands_processed(&mut redis).await? - commands_before - 1;
    let calls = client_calls() - calls_before;
    Ok(HopCost {
        redis_commands: commands as f64 / requests as f64,
        grpc_calls: calls / requests as f64,
        latencies,
    })
}

/// Redis' `total_commands_processed`, this `INFO` included.
async fn commands_processed(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("stats").query_async(redis).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .context("no total_commands_processed in INFO")?
        .trim()
        .parse()
        .context("total_commands_processed")
}

/// Outgoing gRPC calls so far, of every process in this one: the
/// `_count`s of the client-side duration histogram.
fn client_calls() -> f64 {
    quill_platform::metrics::get()
        .render()
        .lines()
        .filter(|line| line.starts_with("rpc_client_call_duration_seconds_count"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The instants at which notifications arrive on `token`'s SSE stream.
async fn sse_arrivals(system: &System, token: &str) -> anyhow::Result<mpsc::Receiver<Instant>> {
    let response = system
        .http
        .get(system.url("/api/notifications/stream"))
        .header("authorization", format!("Token {token}"))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("stream: {}", response.status());
    }
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut pending = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                if line.starts_with("data:") && tx.send(Instant::now()).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

async fn consumer_throughput(events: usize) -> anyhow::Result<(Duration, f64)> {
    let broker = TestBroker::new();
    let mut config = quill_notification::Config::from_env()?;
    use_broker(&mut config, &broker);
    // Fill the queue before any consumer runs, so the figure is the
    // consumer's rate and not the producer's.
    let connection =
        broker::connect(config.events.amqp_url.expose_secret(), "bench-publisher").await?;
    let channel = connection.create_channel().await?;
    config.topology().declare(&channel).await?;
    channel.confirm_select(Default::default()).await?;
    let followee = uuid::Uuid::now_v7().to_string();
    let mut confirms = Vec::with_capacity(events);
    for i in 0..events {
        let envelope = new_envelope(
            "bench",
            Payload::UserFollowed(UserFollowed {
                follower_id: uuid::Uuid::now_v7().to_string(),
                follower_username: format!("follower{i}"),
                followee_id: followee.clone(),
                followee_username: "celebrity".into(),
            }),
        );
        confirms.push(
            channel
                .basic_publish(
                    config.events.exchange.as_str().into(),
                    envelope.r#type.as_str().into(),
                    BasicPublishOptions::default(),
                    &envelope.encode_to_vec(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?,
        );
    }
    for confirm in confirms {
        confirm.await?;
    }

    // Content is not on this path (user.followed needs no fan-out); auth is
    // needed only for token keys.
    let auth = TestAuth::start().await;
    let notification = TestNotification::start(&auth.peer(), "http://127.0.0.1:9", |c| {
        use_broker(c, &broker);
    })
    .await;
    let pool = sqlx::PgPool::connect(&notification.db.url).await?;
    let applied = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM processed_events")
            .fetch_one(&pool)
            .await
            .map(|n| n as usize)
    };
    // Timed from when the service is up; what it applied while starting is
    // subtracted, so start-up (migrations, connections) is not counted.
    let (started, before) = (Instant::now(), applied().await?);
    loop {
        let done = applied().await?;
        if done >= events {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {done} of {events} events applied in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    pool.close().await;
    Ok((elapsed, (events - before) as f64 / elapsed.as_secs_f64()))
}

fn percentile(sorted_or_not: &[Duration], p: f64) -> Duration {
    let mut sorted = sorted_or_not.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn p50_p99(samples: &[Duration]) -> String {
    format!(
        "{:.1} / {:.1} ms",
        ms(percentile(samples, 0.50)),
        ms(percentile(samples, 0.99))
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
