//! The gateway's public listener as the internet sees it: slow clients,
//! forged proxy headers, browsers from other origins, and what is not
//! served there at all (metrics).

use crate::support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::TestGateway;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A client that never finishes its request head (slowloris) loses the
/// connection once the header-read timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let gateway = TestGateway::start_with(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    let mut slow = TcpStream::connect(gateway.addr).await.expect("connect");
    slow.write_all(b"GET /api/tags HTTP/1.1\r\nHost: quill\r\nX-Slow: ")
        .await
        .expect("partial head");
    let started = Instant::now();

    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        // Whatever the server says (a 408, or nothing), it then hangs up.
        loop {
            match slow.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;

    assert!(closed.is_ok(), "still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );
    // Clients that do finish are served as before.
    assert_eq!(gateway.get("/api/tags", None).await.status, StatusCode::OK);
}

/// Behind one trusted proxy, the client is the address that proxy appended
/// (the rightmost entry): rotating a made-up leftmost entry does not make a
/// new client for the rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarded_for_entry_does_not_escape_the_rate_limit() {
    let gateway = TestGateway::setup()
        .gateway(|c| c.trusted_proxies = 1)
        .auth(|c| c.limits.register_per_ip.limit = 2)
        .start()
        .await;
    let register = |i: u32| {
        gateway
            .http
            .post(gateway.url("/api/users"))
            // The client wrote the first entry; the proxy appended the second.
            .header("x-forwarded-for", format!("10.9.{i}.1, 203.0.113.7"))
            .json(&json!({"user": {
                "username": format!("rotor{i}"),
                "email": format!("rotor{i}@example.com"),
                "password": "long enough",
            }}))
    };

    for i in 0..2 {
        let response = gateway.send(register(i)).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    }
    let third = gateway.send(register(2)).await;

    assert_eq!(
        third.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        third.body
    );
    // A different client behind the same proxy has its own budget.
    let other = gateway
        .send(
            gateway
                .http
                .post(gateway.url("/api/users"))
                .header("x-forwarded-for", "203.0.113.8")
                .json(&json!({"user": {
                    "username": "other",
                    "email": "other@example.com",
                    "password": "long enough",
                }})),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
}

/// Metrics are for the admin listener only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_does_not_serve_metrics() {
    let gateway = TestGateway::start().await;
    gateway.get("/api/tags", None).await;

    let scrape = gateway.get("/metrics", None).await;

    assert_eq!(scrape.status, StatusCode::NOT_FOUND, "{}", scrape.body);
    assert!(
        !scrape
            .body
            .to_string()
            .contains("http_server_request_duration_seconds"),
        "{}",
        scrape.body
    );
}

/// Exactly what a stock RealWorld front end on its dev server sends before
/// `PUT /api/user` with a token, and what a standards-strict browser needs
/// to see before it sends the real request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_end_preflight_from_an_allowed_origin_passes() {
    let gateway = TestGateway::start().await;

    let preflight = gateway
        .send(
            gateway
                .http
                .request(Method::OPTIONS, gateway.url("/api/user"))
                .header("origin", "http://localhost:4100")
                .header("access-control-request-method", "PUT")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
        )
        .await;

    assert!(preflight.status.is_success(), "{}", preflight.status);
    let header = |name: &str| {
        preflight
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII").to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    };
    let list = |name: &str| {
        header(name)
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        header("access-control-allow-origin"),
        "http://localhost:4100"
    );
    assert!(list("access-control-allow-methods").contains(&"put".to_owned()));
    let allowed_headers = list("access-control-allow-headers");
    for name in ["authorization", "content-type"] {
        assert!(
            allowed_headers.contains(&name.to_owned()),
            "{name} not named in {allowed_headers:?}"
        );
    }
    let max_age: u64 = header("access-control-max-age").parse().expect("max-age");
    assert!((600..=3600).contains(&max_age), "{max_age}");
    assert!(
        list("vary").contains(&"origin".to_owned()),
        "{:?}",
        list("vary")
    );
    // No credentials mode: the token travels in a header, not a cookie.
    assert!(
        !preflight
            .headers
            .contains_key("access-control-allow-credentials")
    );

    let actual = gateway
        .send(
            gateway
                .http
                .get(gateway.url("/api/tags"))
                .header("origin", "http://localhost:4100"),
        )
        .await;
    assert_eq!(actual.status, StatusCode::OK);
    assert_eq!(
        actual.headers["access-control-allow-origin"],
        "http://localhost:4100"
    );
    let exposed = actual.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("retry-after"),
        "{exposed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_gets_no_cors_grant() {
    let gateway = TestGateway::start().await;

    for request in [
        gateway
            .http
            .request(Method::OPTIONS, gateway.url("/api/user"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            ),
        gateway
            .http
            .get(gateway.url("/api/tags"))
            .header("origin", "https://evil.example"),
    ] {
        let response = gateway.send(request).await;
        assert!(
            !response.headers.contains_key("access-control-allow-origin"),
            "{:?}",
            response.headers
        );
    }
}

/// Shutdown begins: `/readyz` answers 503 at once, so the load balancer
/// stops sending requests here, while requests still get answers for the
/// drain delay; then the gateway stops listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_is_unready_but_answers_until_it_stops_listening() {
    let gateway = TestGateway::start().await;
    let other = gateway
        .another_gateway(|c| c.drain_delay = Duration::from_secs(2))
        .await;
    let ready = gateway
        .http
        .get(format!("{}/readyz", other.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);

    other.stop.cancel();
    let draining = gateway
        .http
        .get(format!("{}/readyz", other.base))
        .send()
        .await
        .expect("readyz while draining");
    assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = draining.json().await.expect("json");
    assert_eq!(body["checks"]["accepting"], json!("down"), "{body}");
    let tags = gateway
        .http
        .get(format!("{}/api/tags", other.base))
        .send()
        .await
        .expect("still answering");
    assert_eq!(tags.status(), StatusCode::OK);

    tokio::time::timeout(Duration::from_secs(10), other.task)
        .await
        .expect("stopped after the delay")
        .expect("task")
        .expect("clean exit");
    let after = reqwest::Client::new()
        .get(format!("{}/readyz", other.base))
        .send()
        .await;
    assert!(after.is_err(), "still listening after the drain");
}
