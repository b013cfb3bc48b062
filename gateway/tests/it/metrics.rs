//! Prometheus metrics on the admin listener the gateway and the services
//! share the shape of: HTTP server families (the gateway's) and RPC server
//! families (the services'), after a few real requests. The public
//! listener serves none of it (tests/edge.rs).

use crate::support;

use quill_platform::metrics;
use support::TestGateway;

/// The value of the first sample of `family` whose labels include every one
/// of `labels` (`name="value"` strings), in any order.
fn sample(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name_labels, value) = line.rsplit_once(' ')?;
            let (name, rest) = name_labels.split_once('{').unwrap_or((name_labels, ""));
            (name == family && labels.iter().all(|l| rest.contains(l)))
                .then(|| value.parse().ok())
                .flatten()
        })
        .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_port_serves_prometheus_metrics() {
    let gateway = TestGateway::start().await;
    let author = gateway.register("metered").await;
    let article = gateway.article(&author, "Counted", &["metrics"]).await;
    let slug = article["slug"].as_str().expect("slug").to_owned();
    let fetched = gateway.get(&format!("/api/articles/{slug}"), None).await;
    assert_eq!(fetched.status, 200);
    let missing = gateway.get("/api/no-such-route", None).await;
    assert_eq!(missing.status, 404);
    let brewed = gateway
        .http
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            gateway.url("/api/tags"),
        )
        .send()
        .await
        .expect("custom method");
    assert!(brewed.status().is_client_error());

    // The one process-wide registry, as the gateway binary serves it on
    // GATEWAY_METRICS_LISTEN; the services here run in-process, so their
    // RPC families are in it too.
    let admin = metrics::spawn_admin_server_on(
        "GATEWAY_METRICS_LISTEN",
        ([127, 0, 0, 1], 0).into(),
        quill_platform::shutdown::CancellationToken::new(),
    )
    .expect("admin server");
    let scrape = gateway
        .http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(scrape.status(), 200);
    assert!(
        scrape.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = scrape.text().await.expect("body");

    // Request counts are the duration histograms' `_count`, by the
    // OpenTelemetry HTTP conventions' labels, status included.
    let http = "http_server_request_duration_seconds_count";
    let created = sample(
        &text,
        http,
        &[
            r#"http_request_method="POST""#,
            r#"http_route="/api/articles""#,
            r#"http_response_status_code="201""#,
        ],
    );
    assert!(created >= Some(1.0), "{text}");
    let registered = sample(
        &text,
        http,
        &[
            r#"http_request_method="POST""#,
            r#"http_route="/api/users""#,
            r#"http_response_status_code="201""#,
        ],
    );
    assert!(registered >= Some(1.0), "{text}");
    let unmatched = sample(
        &text,
        http,
        &[
            r#"http_route="unmatched""#,
            r#"http_response_status_code="404""#,
        ],
    );
    assert!(unmatched >= Some(1.0), "{text}");
    assert!(
        sample(
            &text,
            "http_server_request_duration_seconds_bucket",
            &[r#"http_route="/api/articles""#, r#"le="+Inf""#]
        ) >= Some(1.0)
    );
    // The route label is the pattern, never the raw path; methods outside
    // the standard set share one label value.
    assert!(!text.contains(&slug), "raw path leaked into labels: {text}");
    assert!(
        !text.contains("BREW"),
        "raw method leaked into labels: {text}"
    );
    assert!(
        sample(&text, http, &[r#"http_request_method="_OTHER""#]) >= Some(1.0),
        "{text}"
    );

    let text = gateway
        .http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("admin scrape")
        .text()
        .await
        .expect("body");
    let rpc = "rpc_server_call_duration_seconds_count";
    let created = sample(
        &text,
        rpc,
        &[
            r#"rpc_system_name="grpc""#,
            r#"rpc_method="quill.content.v1.ContentService/CreateArticle""#,
            r#"rpc_response_status_code="OK""#,
        ],
    );
    assert!(created >= Some(1.0), "{text}");
    let registered = sample(
        &text,
        rpc,
        &[
            r#"rpc_method="quill.auth.v1.AuthService/Register""#,
            r#"rpc_response_status_code="OK""#,
        ],
    );
    assert!(registered >= Some(1.0), "{text}");
    // The gateway calls content: the calling side is measured too.
    assert!(
        sample(
            &text,
            "rpc_client_call_duration_seconds_count",
            &[r#"rpc_method="quill.content.v1.ContentService/CreateArticle""#],
        ) >= Some(1.0),
        "{text}"
    );
    // Idle and used add up to the pool: summing the states never double-counts.
    let idle = sample(
        &text,
        "db_client_connection_count",
        &[r#"db_client_connection_state="idle""#],
    );
    let used = sample(
        &text,
        "db_client_connection_count",
        &[r#"db_client_connection_state="used""#],
    );
    assert!(idle.unwrap_or(0.0) + used.unwrap_or(0.0) >= 1.0, "{text}");
    assert!(
        sample(&text, "process_resident_memory_bytes", &[]) > Some(0.0),
        "{text}"
    );
}
