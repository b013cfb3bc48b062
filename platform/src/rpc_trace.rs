//! Tower middleware giving every gRPC call a span with OpenTelemetry RPC
//! attributes, W3C context propagation over metadata, the final status code
//! (read from the headers of a trailers-only response or from the trailers)
//! and the `rpc_server_call_duration_seconds` or
//! `rpc_client_call_duration_seconds` histogram.
//!
//! Used through [`crate::grpc::traced`] (clients) and
//! [`crate::grpc::serve`] (servers).

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tracing::{Span, field::Empty};

use crate::{
    metrics::{self, RpcSide},
    trace_context,
};

const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

/// `("quill.auth.v1.AuthService", "Login")` from `/quill.auth.v1.AuthService/Login`.
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.rsplit_once('/').unwrap_or((path, ""))
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Records the outcome of one call on its span (and metrics) exactly once:
/// at the status, or when dropped early (client gone: CANCELLED).
struct Finish {
    span: Span,
    start: Instant,
    side: RpcSide,
    /// `package.Service/Method`, the metrics' `rpc_method`.
    method: String,
    header_code: Option<i32>,
    done: bool,
}

/// The label value for whatever is not one of our own names (OTel's `_OTHER`).
const OTHER: &str = "_OTHER";

/// Every method a Quill server may serve (its protos, health, reflection):
/// the only `rpc_method` values a server records. A path is the caller's
/// to choose, and any pod may call, so anything else is `_OTHER`.
static KNOWN_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    use prost::Message;
    let mut known: HashSet<String> = [
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(quill_proto::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    known.insert(format!(
                        "{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    known
});

impl Finish {
    fn record(&mut self, code: i32) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.span.record("rpc.grpc.status_code", code);
        // OTel RPC semconv: servers flag only their own failures as errors.
        let error = match self.side {
            RpcSide::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
            RpcSide::Client => code != 0,
        };
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
        let method = if self.side == RpcSide::Server && !KNOWN_METHODS.contains(&self.method) {
            OTHER
        } else {
            self.method.as_str()
        };
        metrics::record_rpc(self.side, method, code, self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let code = self.header_code.unwrap_or(CANCELLED);
        self.record(code);
    }
}

pin_project! {
    /// A response body that reports the call's `grpc-status` when it ends.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(finish) = this.finish.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(code) = f.trailers_ref().and_then(grpc_status) {
                        finish.record(code);
                    }
                }
                Some(Err(_)) => finish.record(UNKNOWN),
                None => finish.record(finish.header_code.unwrap_or(UNKNOWN)),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The response future of [`Traced`] and [`RpcServerObserve`].
    pub struct ObservedFuture<F> {
        #[pin]
        inner: F,
        finish: Option<Finish>,
    }
}

impl<F, B, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.finish.as_ref().map(|f| f.span.enter());
        let result = ready!(this.inner.poll(cx));
        drop(_entered);
        let mut finish = this.finish.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(finish) = finish.as_mut() {
                    finish.header_code = grpc_status(response.headers());
                }
                Ok(response.map(|inner| ObservedBody { inner, finish }))
            }
            Err(e) => {
                if let Some(mut finish) = finish {
                    finish.record(UNKNOWN);
                }
                Err(e)
            }
        })
    }
}

/// A gRPC client transport whose every call gets a client span (a child of
/// the current span) and carries that span's context in its metadata.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S> Traced<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Traced<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let rpc_method = format!("{service}/{method}");
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        trace_context::inject_headers(&span, request.headers_mut());
        crate::request_id::propagate(request.headers_mut());
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ObservedFuture {
            inner,
            finish: Some(Finish {
                span,
                start: Instant::now(),
                side: RpcSide::Client,
                method: rpc_method,
                header_code: None,
                done: false,
            }),
        }
    }
}

/// Server middleware (inside the span-making `TraceLayer`): records the
/// status on the current `rpc` span and the `rpc_server_call_duration_seconds` histogram.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcServerObserveLayer;

impl<S> tower::Layer<S> for RpcServerObserveLayer {
    type Service = RpcServerObserve<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcServerObserve { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcServerObserve<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RpcServerObserve<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let finish = Finish {
            span: Span::current(),
            start: Instant::now(),
            side: RpcSide::Server,
            method: format!("{service}/{method}"),
            header_code: None,
            done: false,
        };
        ObservedFuture {
            inner: self.inner.call(request),
            finish: Some(finish),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{KNOWN_METHODS, split_path};

    #[test]
    fn only_methods_quill_serves_are_known() {
        assert!(KNOWN_METHODS.contains("quill.auth.v1.AuthService/Login"));
        assert!(KNOWN_METHODS.contains("quill.content.v1.ContentService/ListArticles"));
        assert!(KNOWN_METHODS.contains("grpc.health.v1.Health/Check"));
        assert!(!KNOWN_METHODS.contains("quill.auth.v1.AuthService/NoSuchCall"));
        assert!(!KNOWN_METHODS.contains("attacker.Chosen/Path"));
    }

    #[test]
    fn splits_service_and_method() {
        assert_eq!(
            split_path("/quill.auth.v1.AuthService/Login"),
            ("quill.auth.v1.AuthService", "Login")
        );
        assert_eq!(split_path("/odd"), ("odd", ""));
    }
}
