//! The whole system as separate processes: the four real binaries, each
//! exporting spans over OTLP to a receiver in this test, logging JSON lines
//! to stdout and serving Prometheus metrics. A REST call is followed through
//! the one trace it makes (HTTP -> gRPC metadata -> outbox -> AMQP headers ->
//! consumers), the log lines it leaves and the counts it adds, in every
//! process it touches; then every process must drain and exit cleanly on
//! SIGTERM.
//!
//! Needs the binaries built (`cargo build --workspace --bins`, which
//! scripts/test.sh runs first).

use crate::processes_support;

use std::{collections::BTreeSet, time::Duration};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use processes_support::{
    monitoring,
    otlp::{Exported, Receiver, Trace, hex},
    prometheus::{self, Sample},
    system::{SERVICES, System},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const PROCESSES: [&str; 4] = ["gateway", "auth", "content", "notification"];

const GATEWAY: &str = "quill-gateway";
const AUTH: &str = "quill-auth";
const CONTENT: &str = "quill-content";
const NOTIFICATION: &str = "quill-notification";
const AUTH_SERVICE: &str = "quill.auth.v1.AuthService";
const CONTENT_SERVICE: &str = "quill.content.v1.ContentService";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registration_is_one_trace_one_request_id_and_counted_in_every_process() {
    let (otlp, receiver) = Receiver::start().await;
    let mut system = System::start(&otlp).await;

    let request_id = new_request_id();
    let (username, token) = register(&system, &request_id).await;

    // The call ends in a notification: the welcome, listed through REST.
    let welcome = wait_for_notification(&system, &token, "welcome").await;
    assert_eq!(welcome["title"], format!("Welcome to Quill, {username}!"));

    // One trace through all four processes.
    let consumers = [
        (CONTENT, system.queue("content")),
        (NOTIFICATION, system.queue("notification")),
    ];
    let trace = wait_for_trace(&receiver, "/api/users", |t| {
        has_rpc(t, AUTH, "Register") && has_broker_hop(t, AUTH, &consumers)
    })
    .await;
    let tree = trace.render();
    let services: BTreeSet<&str> = trace.spans.iter().map(Exported::service).collect();
    assert_eq!(
        services,
        [AUTH, CONTENT, GATEWAY, NOTIFICATION].into(),
        "one trace id across the four processes:\n{tree}"
    );
    assert_resources_and_no_errors(&trace);
    let http = assert_http_root(&trace, "POST", "/api/users", "/api/users", 201);
    let server = assert_rpc_hop(&trace, http, AUTH, AUTH_SERVICE, "Register");
    assert_eq!(server.attr("rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(server.attr("request_id"), Some(request_id.clone()));
    let publish = assert_published(&trace, server, &system.exchange, "user.registered");
    for (service, queue) in &consumers {
        assert_consumed(&trace, publish, service, queue);
    }

    // Logs: JSON lines; the request's lines carry its id and the trace's, in
    // the gateway (HTTP span) and in auth (RPC span: the request id came in
    // gRPC metadata, the trace context in `traceparent`).
    let trace_id = hex(&http.span.trace_id);
    for (process, span) in [("gateway", http), ("auth", server)] {
        let lines = json_lines(&system, process);
        let ours: Vec<&Value> = lines
            .iter()
            .filter(|l| l["request_id"] == request_id.as_str())
            .collect();
        assert!(
            !ours.is_empty(),
            "no {process} log line with request_id {request_id}: {lines:#?}"
        );
        for line in &ours {
            assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
            assert!(
                line["span_id"].as_str().is_some_and(|id| id.len() == 16),
                "{line}"
            );
            assert!(line["timestamp"].is_string() && line["level"].is_string());
        }
        assert!(
            ours.iter()
                .any(|l| l["span_id"] == hex(&span.span.span_id).as_str()),
            "a {process} line logged in {}: {ours:#?}",
            span.summary()
        );
    }

    // Metrics: each process has its own registry, so the one call gives
    // exact counts, and nobody counts another's work.
    let gateway = scrape(&system, "gateway").await;
    assert_eq!(http_requests(&gateway, "POST", "/api/users", "201"), 1.0);
    assert_eq!(
        sample(
            &gateway,
            "rpc_client_call_duration_seconds_count",
            &[("rpc_method", &format!("{AUTH_SERVICE}/Register"))]
        ),
        1.0,
        "the gateway measures its own call to auth"
    );
    let auth = wait_until_published(&system, "auth", "user.registered").await;
    assert_eq!(rpc_requests(&auth, AUTH_SERVICE, "Register", "OK"), 1.0);
    for (service, queue) in [
        ("content", system.queue("content")),
        ("notification", system.queue("notification")),
    ] {
        let samples = scrape(&system, service).await;
        assert_eq!(consumed(&samples, &queue, "user.registered"), 1.0);
        let destination = [("messaging_destination_name", queue.as_str())];
        let processed = [
            ("messaging_system", "rabbitmq"),
            ("messaging_destination_name", queue.as_str()),
            ("messaging_operation_name", "process"),
        ];
        assert!(
            sample(
                &samples,
                "messaging_process_duration_seconds_count",
                &processed
            ) >= 1.0
        );
        assert!(
            sample(
                &samples,
                "messaging_consumer_lag_seconds_count",
                &destination
            ) >= 1.0
        );
        sample(&samples, "messaging_consumer_lag_messages", &destination);
        assert_eq!(
            prometheus::value(
                &samples,
                "rpc_server_call_duration_seconds_count",
                &[("rpc_method", &format!("{AUTH_SERVICE}/Register"))]
            ),
            None,
            "{service} counts auth's calls"
        );
    }
    assert_eq!(
        prometheus::value(&gateway, "rpc_server_call_duration_seconds_count", &[]),
        None,
        "the gateway serves no gRPC"
    );
    // content publishes events too: its relay reports its own backlog.
    let content = scrape(&system, "content").await;
    let content_db = system.database("content");
    assert_eq!(
        sample(&content, "outbox_backlog", &[("db", &content_db)]),
        0.0
    );
    assert_eq!(
        sample(
            &content,
            "outbox_oldest_age_seconds",
            &[("db", &content_db)]
        ),
        0.0
    );
    for service in SERVICES {
        let samples = scrape(&system, service).await;
        let db = system.database(service);
        let pool = ("db_client_connection_pool_name", db.as_str());
        let state = |s| [pool, ("db_client_connection_state", s)];
        let connections = sample(&samples, "db_client_connection_count", &state("idle"))
            + sample(&samples, "db_client_connection_count", &state("used"));
        assert!(connections >= 1.0);
        assert!(connections <= sample(&samples, "db_client_connection_max", &[pool]));
    }
    for process in PROCESSES {
        let samples = scrape(&system, process).await;
        assert!(sample(&samples, "process_resident_memory_bytes", &[]) > 0.0);
        assert!(sample(&samples, "process_cpu_seconds_total", &[]) >= 0.0);
    }
    // The dashboard and the alert rules ask only for what these processes expose.
    let mut exposed = Vec::new();
    for process in PROCESSES {
        exposed.extend(scrape(&system, process).await);
    }
    monitoring::assert_queries_match(&exposed);

    assert_clean_exit(&mut system);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_article_is_one_trace_from_the_gateway_through_content_to_a_follower_s_notification() {
    let (otlp, receiver) = Receiver::start().await;
    let mut system = System::start(&otlp).await;
    let (author, token) = register(&system, &new_request_id()).await;
    let (_, follower) = register(&system, &new_request_id()).await;
    let follow = system
        .http
        .post(system.url(&format!("/api/profiles/{author}/follow")))
        .header("authorization", format!("Token {follower}"))
        .send()
        .await
        .expect("follow");
    assert_eq!(follow.status(), StatusCode::OK);

    let request_id = new_request_id();
    let response = system
        .http
        .post(system.url("/api/articles"))
        .header("authorization", format!("Token {token}"))
        .header("x-request-id", &request_id)
        .json(&json!({"article": {
            "title": "Traced through four processes",
            "description": "Spans, logs and metrics",
            "body": "One trace id from the edge to the consumer.",
            "tagList": ["otel"],
        }}))
        .send()
        .await
        .expect("create article");
    assert_eq!(response.status(), StatusCode::CREATED);
    wait_for_notification(&system, &follower, "new_article").await;

    // article.published, carrying the author's followers: notification
    // consumes it in the request's trace and asks content nothing more.
    let consumers = [(NOTIFICATION, system.queue("notification"))];
    let trace = wait_for_trace(&receiver, "/api/articles", |t| {
        has_rpc(t, CONTENT, "CreateArticle") && has_broker_hop(t, CONTENT, &consumers)
    })
    .await;
    assert_resources_and_no_errors(&trace);
    let http = assert_http_root(&trace, "POST", "/api/articles", "/api/articles", 201);
    let server = assert_rpc_hop(&trace, http, CONTENT, CONTENT_SERVICE, "CreateArticle");
    assert_eq!(server.attr("rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(server.attr("request_id"), Some(request_id.clone()));
    let publish = assert_published(&trace, server, &system.exchange, "article.published");
    let process = assert_consumed(&trace, publish, NOTIFICATION, &consumers[0].1);
    // The request id crossed the broker.
    assert_eq!(
        process.attr("request_id"),
        Some(request_id.clone()),
        "{}",
        trace.render()
    );

    let gateway = scrape(&system, "gateway").await;
    assert_eq!(http_requests(&gateway, "POST", "/api/articles", "201"), 1.0);
    let content = wait_until_published(&system, "content", "article.published").await;
    assert_eq!(
        rpc_requests(&content, CONTENT_SERVICE, "CreateArticle", "OK"),
        1.0
    );
    let follower_streams = format!("{CONTENT_SERVICE}/StreamFollowerIds");
    assert!(
        content
            .iter()
            .all(|s| s.labels.get("rpc_method") != Some(&follower_streams)),
        "the fan-out asked content for the followers its event carries"
    );
    let notification = scrape(&system, "notification").await;
    assert_eq!(
        consumed(
            &notification,
            &system.queue("notification"),
            "article.published"
        ),
        1.0
    );

    assert_clean_exit(&mut system);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_profile_content_does_not_know_is_asked_of_auth_in_the_same_trace() {
    let (otlp, receiver) = Receiver::start().await;
    let mut system = System::start(&otlp).await;

    let path = "/api/profiles/nobody-by-that-name";
    let response = system
        .http
        .get(system.url(path))
        .send()
        .await
        .expect("get profile");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("request id")
        .to_owned();

    // A read-model miss: content asks auth, which knows nobody by that name.
    let trace = wait_for_trace(&receiver, "/api/profiles/{username}", |t| {
        has_rpc(t, CONTENT, "GetProfile") && has_rpc(t, AUTH, "GetUserByUsername")
    })
    .await;
    let tree = trace.render();
    let http = assert_http_root(&trace, "GET", "/api/profiles/{username}", path, 404);
    let content = assert_rpc_hop(&trace, http, CONTENT, CONTENT_SERVICE, "GetProfile");
    let auth = assert_rpc_hop(&trace, content, AUTH, AUTH_SERVICE, "GetUserByUsername");
    // The gateway's request id, carried on by content's own call.
    for server in [content, auth] {
        assert_eq!(
            server.attr("request_id"),
            Some(request_id.clone()),
            "{tree}"
        );
    }
    // Both services answered NOT_FOUND, and each caller saw it: the client
    // spans are the ones that failed.
    for server in [content, auth] {
        assert_eq!(server.attr("rpc.grpc.status_code").as_deref(), Some("5"));
        assert!(
            !server.is_error(),
            "NOT_FOUND is the caller's, not the server's, error"
        );
    }
    for process in [CONTENT, AUTH] {
        let errors: Vec<String> = system
            .stdout(process)
            .into_iter()
            .filter(|line| line.contains(r#""level":"ERROR""#))
            .collect();
        assert!(errors.is_empty(), "{process} logged errors: {errors:#?}");
    }
    let clients: Vec<&Exported> = trace
        .spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Client)
        .collect();
    assert_eq!(clients.len(), 2, "{tree}");
    assert!(clients.iter().all(|c| c.is_error()), "{tree}");
    assert!(!http.is_error(), "a 4xx is not the server's error");

    assert_clean_exit(&mut system);
}

fn new_request_id() -> String {
    format!("processes-{}", uuid::Uuid::new_v4().simple())
}

/// Registers a new user with `x-request-id: request_id`; returns the
/// username and the access token.
async fn register(system: &System, request_id: &str) -> (String, String) {
    let username = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let response = system
        .http
        .post(system.url("/api/users"))
        .header("x-request-id", request_id)
        .json(&json!({"user": {
            "username": username,
            "email": format!("{username}@example.com"),
            "password": "a-long-enough-secret",
        }}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], request_id);
    let body: Value = response.json().await.expect("body");
    let token = body["user"]["token"].as_str().expect("token").to_owned();
    (username, token)
}

/// The trace of the request to `route`, once `complete`: each process
/// exports on its own schedule, so the last span to happen is not
/// necessarily the last to arrive; wait for every span the assertions use.
async fn wait_for_trace(
    receiver: &Receiver,
    route: &str,
    complete: impl Fn(&Trace) -> bool,
) -> Trace {
    let what = format!("every span of the {route} trace");
    receiver
        .wait_for(&what, WAIT, |all| {
            let root = all.iter().find(|s| {
                s.service() == GATEWAY
                    && s.kind() == SpanKind::Server
                    && s.attr("http.route").as_deref() == Some(route)
            })?;
            let trace = Trace::new(all, &root.span.trace_id);
            complete(&trace).then_some(trace)
        })
        .await
}

/// Both ends of a `method` call to `service` have been exported.
fn has_rpc(trace: &Trace, service: &str, method: &str) -> bool {
    let is_call = |s: &Exported| is_rpc(s) && s.attr("rpc.method").as_deref() == Some(method);
    trace
        .find(|s| is_call(s) && s.kind() == SpanKind::Client)
        .is_some()
        && trace
            .find(|s| is_call(s) && s.kind() == SpanKind::Server && s.service() == service)
            .is_some()
}

/// `publisher`'s outbox write and publish, and each consumer's process span
/// with its statement, have been exported.
fn has_broker_hop(trace: &Trace, publisher: &str, consumers: &[(&str, String)]) -> bool {
    trace
        .find(|s| s.service() == publisher && is_outbox_insert(s))
        .is_some()
        && trace.find(is_publish).is_some()
        && consumers.iter().all(|(service, _)| {
            trace
                .find(|s| s.service() == *service && is_process(s))
                .is_some_and(|p| trace.find(|s| is_db(s) && is_child_of(s, p)).is_some())
        })
}

/// Every process says which version and environment it is.
fn assert_resources_and_no_errors(trace: &Trace) {
    let tree = trace.render();
    for span in &trace.spans {
        let resource = |key: &str| span.resource.get(key).map(String::as_str);
        assert_eq!(
            resource("service.version"),
            Some(env!("CARGO_PKG_VERSION")),
            "{}",
            span.summary()
        );
        assert_eq!(
            resource("deployment.environment"),
            Some("test"),
            "{}",
            span.summary()
        );
        assert!(!span.is_error(), "{} failed:\n{tree}", span.summary());
    }
}

/// The gateway's HTTP server span is the trace's one root.
/// `route` is the matched pattern, `path` the request's.
fn assert_http_root<'t>(
    trace: &'t Trace,
    method: &str,
    route: &str,
    path: &str,
    status: u16,
) -> &'t Exported {
    let tree = trace.render();
    let roots: Vec<&Exported> = trace
        .spans
        .iter()
        .filter(|s| s.span.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root:\n{tree}");
    let http = roots[0];
    assert_eq!(http.service(), GATEWAY, "{tree}");
    assert_eq!(http.kind(), SpanKind::Server);
    assert_eq!(http.span.name, format!("{method} {route}"));
    assert_eq!(http.attr("http.request.method").as_deref(), Some(method));
    assert_eq!(http.attr("http.route").as_deref(), Some(route));
    assert_eq!(http.attr("url.path").as_deref(), Some(path));
    assert_eq!(
        http.attr("http.response.status_code"),
        Some(status.to_string())
    );
    http
}

/// `caller` -> `service` over gRPC: a client span of the caller's process
/// under `caller`, and the service's server span under that client span
/// (the context crossed in metadata). Returns the server span.
fn assert_rpc_hop<'t>(
    trace: &'t Trace,
    caller: &Exported,
    service: &str,
    rpc_service: &str,
    method: &str,
) -> &'t Exported {
    let tree = trace.render();
    let is_call = |s: &Exported| is_rpc(s) && s.attr("rpc.method").as_deref() == Some(method);
    let client = trace
        .find(|s| is_call(s) && s.kind() == SpanKind::Client && is_child_of(s, caller))
        .unwrap_or_else(|| {
            panic!(
                "no {method} client span under {}:\n{tree}",
                caller.summary()
            )
        });
    assert_eq!(client.service(), caller.service(), "{tree}");
    let server = trace
        .find(|s| is_call(s) && s.kind() == SpanKind::Server && is_child_of(s, client))
        .unwrap_or_else(|| {
            panic!(
                "no {method} server span under {}:\n{tree}",
                client.summary()
            )
        });
    assert_eq!(server.service(), service, "{tree}");
    assert_eq!(server.span.name, format!("{rpc_service}/{method}"));
    for span in [client, server] {
        assert_eq!(span.attr("rpc.service").as_deref(), Some(rpc_service));
        assert_eq!(
            span.attr("rpc.grpc.status_code"),
            server.attr("rpc.grpc.status_code"),
            "both ends saw the same status"
        );
    }
    server
}

/// The state change and its outbox row are one statement span of the
/// request; the relay's publish continues the request's trace (its context
/// travelled in the row's envelope). Returns the publish span.
fn assert_published<'t>(
    trace: &'t Trace,
    server: &Exported,
    exchange: &str,
    routing_key: &str,
) -> &'t Exported {
    let tree = trace.render();
    let outbox = trace
        .find(is_outbox_insert)
        .unwrap_or_else(|| panic!("no outbox insert span:\n{tree}"));
    assert_eq!(outbox.service(), server.service());
    assert_eq!(outbox.attr("db.system").as_deref(), Some("postgresql"));
    assert!(trace.descends_from(outbox, server), "{tree}");
    let publish = trace
        .find(is_publish)
        .unwrap_or_else(|| panic!("no publish span:\n{tree}"));
    assert_eq!(publish.service(), server.service());
    assert_eq!(publish.kind(), SpanKind::Producer);
    assert!(trace.descends_from(publish, server), "{tree}");
    assert_eq!(
        publish.attr("messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        publish.attr("messaging.destination.name").as_deref(),
        Some(exchange)
    );
    assert_eq!(
        publish
            .attr("messaging.rabbitmq.destination.routing_key")
            .as_deref(),
        Some(routing_key)
    );
    publish
}

/// `service`'s consumer processed the message as a child of its publish
/// (the context crossed in the AMQP headers), with a statement under it.
/// Returns the process span.
fn assert_consumed<'t>(
    trace: &'t Trace,
    publish: &Exported,
    service: &str,
    queue: &str,
) -> &'t Exported {
    let tree = trace.render();
    let process = trace
        .find(|s| s.service() == service && is_process(s))
        .unwrap_or_else(|| panic!("no {service} process span:\n{tree}"));
    assert!(is_child_of(process, publish), "{tree}");
    assert_eq!(process.kind(), SpanKind::Consumer);
    assert_eq!(
        process.attr("messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        process.attr("messaging.destination.name").as_deref(),
        Some(queue)
    );
    for key in [
        "messaging.rabbitmq.destination.routing_key",
        "messaging.message.id",
    ] {
        assert_eq!(process.attr(key), publish.attr(key), "{key}");
    }
    let db = trace
        .find(|s| is_db(s) && is_child_of(s, process))
        .unwrap_or_else(|| panic!("no db span under {service}'s process span:\n{tree}"));
    assert_eq!(db.service(), service);
    assert_eq!(db.attr("db.system").as_deref(), Some("postgresql"));
    process
}

/// SIGTERM: every process drains and exits with success.
fn assert_clean_exit(system: &mut System) {
    for (name, exit) in system.stop() {
        assert!(
            exit.is_some_and(|status| status.success()),
            "quill-{name} did not exit cleanly on SIGTERM: {exit:?}"
        );
    }
}

fn is_rpc(span: &Exported) -> bool {
    span.attr("rpc.system").as_deref() == Some("grpc")
}

fn is_publish(span: &Exported) -> bool {
    span.attr("messaging.operation").as_deref() == Some("publish")
}

fn is_process(span: &Exported) -> bool {
    span.attr("messaging.operation").as_deref() == Some("process")
}

fn is_db(span: &Exported) -> bool {
    span.attr("db.system").is_some()
}

fn is_outbox_insert(span: &Exported) -> bool {
    is_db(span) && span.attr("db.collection.name").as_deref() == Some("outbox")
}

fn is_child_of(span: &Exported, parent: &Exported) -> bool {
    span.span.parent_span_id == parent.span.span_id
}

/// `process`'s stdout so far, each line parsed as JSON.
fn json_lines(system: &System, process: &str) -> Vec<Value> {
    system
        .stdout(process)
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{process} stdout is not JSON lines ({e}): {line}"))
        })
        .collect()
}

/// Polls the caller's notification list until one of `kind` shows up.
async fn wait_for_notification(system: &System, token: &str, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list: Value = system
            .http
            .get(system.url("/api/notifications"))
            .header("authorization", format!("Token {token}"))
            .send()
            .await
            .expect("list notifications")
            .json()
            .await
            .expect("notifications body");
        if let Some(found) = list["notifications"]
            .as_array()
            .and_then(|all| all.iter().find(|n| n["kind"] == kind))
        {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} notification within {WAIT:?}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scrape(system: &System, process: &str) -> Vec<Sample> {
    prometheus::parse(&system.scrape(process).await)
}

/// The value of the sample of `name` with `labels`; fails if there is none.
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus::value(samples, name, labels).unwrap_or_else(|| {
        let scraped: Vec<String> = samples
            .iter()
            .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
            .collect();
        panic!(
            "no sample {name}{labels:?}; scraped:\n{}",
            scraped.join("\n")
        )
    })
}

fn http_requests(samples: &[Sample], method: &str, route: &str, status: &str) -> f64 {
    let labels = [
        ("http_request_method", method),
        ("http_route", route),
        ("http_response_status_code", status),
    ];
    sample(
        samples,
        "http_server_request_duration_seconds_count",
        &labels,
    )
}

fn rpc_requests(samples: &[Sample], service: &str, method: &str, code: &str) -> f64 {
    let method = format!("{service}/{method}");
    let labels = [
        ("rpc_system_name", "grpc"),
        ("rpc_method", method.as_str()),
        ("rpc_response_status_code", code),
    ];
    sample(samples, "rpc_server_call_duration_seconds_count", &labels)
}

fn consumed(samples: &[Sample], queue: &str, routing_key: &str) -> f64 {
    let labels = [
        ("queue", queue),
        ("routing_key", routing_key),
        ("outcome", "ok"),
    ];
    sample(samples, "events_consumed_total", &labels)
}

/// Scrapes `service` until its relay has counted one `routing_key` event as
/// published (after the broker's confirm and the row's commit) and its
/// backlog gauge (refreshed on the next poll) is back to 0.
async fn wait_until_published(system: &System, service: &str, routing_key: &str) -> Vec<Sample> {
    let db = system.database(service);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let samples = scrape(system, service).await;
        let published = [("routing_key", routing_key)];
        if prometheus::value(&samples, "events_published_total", &published) == Some(1.0)
            && prometheus::value(&samples, "outbox_backlog", &[("db", &db)]) == Some(0.0)
        {
            return samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} did not report one {routing_key} published and an empty outbox within \
             {WAIT:?}:\n{}",
            system.scrape(service).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
