//! Spans reach an OTLP/HTTP (protobuf) receiver when
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`. Own binary: telemetry is
//! process-global.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, body::Bytes, routing::post};
use quill_platform::{telemetry, testing::ephemeral_listener};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
