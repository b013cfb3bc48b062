//! Spans reach an OTLP/HTTP (protobuf) receiver when
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, body::Bytes, routing::post};
use quill_platform::{telemetry, testing::ephemeral_listener, trace_context};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(unsafe_code)]
async fn spans_are_exported_over_http_protobuf() {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| async move {
            if !body.is_empty() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            "" // an empty ExportTraceServiceResponse
        }),
    );
    let (listener, addr) = ephemeral_listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    // SAFETY: set before telemetry starts any thread that reads them.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
        std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    }
    let telemetry = telemetry::init("platform-http-test");
    tracing::info_span!("exported").in_scope(|| tracing::info!("inside"));
    for _ in 0..50 {
        telemetry.flush();
        if received.load(Ordering::SeqCst) > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no OTLP/HTTP export arrived");
}

#[test]
fn traceparent_round_trips_through_strings() {
    let _telemetry = telemetry::init("platform-tests");
    let span = tracing::info_span!("origin");
    let (traceparent, _) = trace_context::to_strings(&span);
    let (trace_id, span_id) = trace_context::ids(&span).expect("traced");
    assert_eq!(traceparent, format!("00-{trace_id}-{span_id}-01"));

    let child = tracing::info_span!(parent: None, "remote child");
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", traceparent.parse().unwrap());
    trace_context::set_parent_from_headers(&child, &headers);
    let (child_trace, child_span) = trace_context::ids(&child).expect("traced");
    assert_eq!(child_trace, trace_id);
    assert_ne!(child_span, span_id);

    // Garbage starts a new trace instead of failing.
    let orphan = tracing::info_span!(parent: None, "orphan");
    headers.insert("traceparent", "00-nonsense".parse().unwrap());
    trace_context::set_parent_from_headers(&orphan, &headers);
    assert_ne!(trace_context::ids(&orphan).expect("traced").0, trace_id);
}
