//! Sending a failed call again, through the balancer, so it usually lands
//! on another replica. Two kinds of call are resent:
//!
//! - **Any call that never left**: the connection to the chosen replica
//!   could not be opened (a replica killed mid-load stays in the balancer
//!   until its next health check, and tonic answers calls to it with the
//!   connect error). Nothing reached a server, so even a write is safe to
//!   send again; this is grpc's "transparent retry".
//! - **Reads that failed on the way**: a call whose connection broke
//!   mid-flight (it may or may not have run) or that a replica refused as
//!   UNAVAILABLE, if the contract declares the method free of side effects
//!   (`option idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT` in the
//!   `.proto`). A write that failed this way is never resent.
//!
//! Retries draw on a budget (20% of recent calls, at least 10 a second) so
//! a struggling upstream is not buried under them. Every Quill RPC sends
//! one request message (no client streaming: a test guards it), so the
//! request is kept whole to send again.

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost_types::{FileDescriptorSet, method_options::IdempotencyLevel};
use tonic::body::Body;
use tower::{
    Service, ServiceExt,
    retry::budget::{Budget, TpsBudget},
};

/// Attempts after the first.
const MAX_RETRIES: usize = 2;
/// The pause before a retry: long enough for the balancer to have another
/// endpoint ready, short against any deadline.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Less than this left of the caller's deadline: no retry is worth sending.
const MIN_TIME_LEFT: Duration = Duration::from_millis(5);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which calls may be retried, by gRPC path (`/quill.content.v1.ContentService/GetArticle`).
pub type Retryable = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The methods of Quill's contracts declared free of side effects.
pub fn declared_safe() -> Retryable {
    static SAFE: LazyLock<HashSet<String>> = LazyLock::new(|| {
        let files = FileDescriptorSet::decode(quill_proto::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set decodes");
        let mut safe = HashSet::new();
        for file in files.file {
            for service in &file.service {
                for method in &service.method {
                    let level = method
                        .options
                        .as_ref()
                        .map_or(IdempotencyLevel::IdempotencyUnknown, |o| {
                            o.idempotency_level()
                        });
                    if level != IdempotencyLevel::IdempotencyUnknown {
                        safe.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        safe
    });
    Arc::new(|path| SAFE.contains(path))
}

/// Wraps a channel so that failed calls are resent when that is safe (see
/// the module docs).
#[derive(Clone)]
pub struct RetryCalls<S> {
    inner: S,
    retryable: Retryable,
    budget: Arc<TpsBudget>,
}

impl<S> RetryCalls<S> {
    pub fn new(inner: S, retryable: Retryable) -> Self {
        Self {
            inner,
            retryable,
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
        }
    }
}

impl<S> Service<http::Request<Body>> for RetryCalls<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The inner service that was polled ready serves the first attempt.
        let clone = self.inner.clone();
        let mut first = std::mem::replace(&mut self.inner, clone);
        self.budget.deposit();
        let safe = (self.retryable)(request.uri().path());
        let (mut inner, budget) = (self.inner.clone(), Arc::clone(&self.budget));
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let deadline = grpc_timeout(&parts.headers).map(|t| tokio::time::Instant::now() + t);
            // A request is one small message: keep it to send again.
            let bytes = body.collect().await.map_err(BoxError::from)?.to_bytes();
            let mut outcome = first
                .call(rebuild(&parts, bytes.clone()))
                .await
                .map_err(Into::into);
            for _ in 0..MAX_RETRIES {
                if !worth_retrying(&outcome, safe) || !budget.withdraw() {
                    break;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                // A retry gets what is left of the caller's deadline, and
                // none once it is spent.
                if let Some(deadline) = deadline {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left < MIN_TIME_LEFT {
                        break;
                    }
                    if let Ok(timeout) =
                        http::HeaderValue::try_from(format!("{}m", left.as_millis()))
                    {
                        parts.headers.insert("grpc-timeout", timeout);
                    }
                }
                let ready = inner.ready().await.map_err(Into::into)?;
                outcome = ready
                    .call(rebuild(&parts, bytes.clone()))
                    .await
                    .map_err(Into::into);
            }
            outcome
        })
    }
}

/// The `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn rebuild(parts: &http::request::Parts, bytes: Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(bytes)));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Any call that never left; for a `safe` one also a broken connection or
/// a replica's UNAVAILABLE (a trailers-only answer: the status is in the
/// headers).
fn worth_retrying(outcome: &Result<http::Response<Body>, BoxError>, safe: bool) -> bool {
    match outcome {
        Err(error) => safe || never_left(error.as_ref()),
        Ok(response) => {
            safe && response
                .headers()
                .get("grpc-status")
                .is_some_and(|code| code.as_bytes() == b"14")
        }
    }
}

/// The call reached no handler: the connection could not be opened (tonic
/// marks that with [`tonic::ConnectError`] somewhere in the error's chain),
/// or the server refused the stream before processing it. HTTP/2 says
/// which: a stream reset with REFUSED_STREAM, and the streams a GOAWAY
/// names as above the last one the server will process (a replica that
/// starts to drain sends one), were not processed (RFC 9113, 8.7). h2
/// gives the remote GOAWAY's error only to those streams and to any opened
/// after it; a call the server was running when it closed fails as a
/// broken pipe instead.
fn never_left(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            return h2.is_remote() && (refused || h2.is_go_away());
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const READ: &str = "/quill.content.v1.ContentService/GetArticle";
    const WRITE: &str = "/quill.content.v1.ContentService/CreateArticle";

    type Answer = Result<http::Response<Body>, BoxError>;
    type Received = Arc<Mutex<Vec<Bytes>>>;

    /// An upstream that fails its first `failures` calls the way `failure`
    /// says, then answers; it records every body it received.
    fn upstream(
        failures: usize,
        failure: fn() -> Answer,
    ) -> (
        impl Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = BoxError,
            Future = BoxFuture<'static, Answer>,
        > + Clone,
        Received,
    ) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&received);
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                let body = request.into_body().collect().await?.to_bytes();
                let attempt = {
                    let mut seen = seen.lock().expect("seen");
                    seen.push(body);
                    seen.len()
                };
                if attempt <= failures {
                    failure()
                } else {
                    Ok(http::Response::new(Body::empty()))
                }
            }) as BoxFuture<'static, _>
        });
        (service, received)
    }

    /// The connection to the replica could not be opened.
    fn refused() -> Answer {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        Err(Box::new(tonic::ConnectError(Box::new(refused))))
    }

    /// The connection broke with the call on it.
    fn reset() -> Answer {
        Err("connection reset".into())
    }

    fn unavailable() -> Answer {
        let mut response = http::Response::new(Body::empty());
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("14"));
        Ok(response)
    }

    fn call(path: &str) -> http::Request<Body> {
        http::Request::post(path)
            .body(Body::new(Full::new(Bytes::from_static(b"the message"))))
            .expect("request")
    }

    fn only_reads() -> Retryable {
        Arc::new(|path| path == READ)
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_failed_is_sent_again_whole() {
        for failure in [refused, reset, unavailable] {
            let (upstream, received) = upstream(2, failure);
            let mut retrying = RetryCalls::new(upstream, only_reads());
            let answer = retrying
                .ready()
                .await
                .expect("ready")
                .call(call(READ))
                .await;
            assert!(answer.is_ok_and(|r| r.headers().get("grpc-status").is_none()));
            let received = received.lock().expect("received");
            assert_eq!(received.len(), 3, "two retries");
            assert!(received.iter().all(|body| body == "the message"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_may_have_run_is_never_sent_twice() {
        for failure in [reset, unavailable] {
            let (upstream, received) = upstream(1, failure);
            let mut retrying = RetryCalls::new(upstream, only_reads());
            let _ = retrying
                .ready()
                .await
                .expect("ready")
                .call(call(WRITE))
                .await;
            assert_eq!(received.lock().expect("received").len(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_left_is_sent_again() {
        let (upstream, received) = upstream(1, refused);
        let mut retrying = RetryCalls::new(upstream, only_reads());
        let answer = retrying
            .ready()
            .await
            .expect("ready")
            .call(call(WRITE))
            .await;
        assert!(answer.is_ok_and(|r| r.headers().get("grpc-status").is_none()));
        let received = received.lock().expect("received");
        assert_eq!(received.len(), 2, "one retry");
        assert!(received.iter().all(|body| body == "the message"));
    }

    /// A real HTTP/2 server that resets its first stream with `reason`,
    /// then answers OK; how many streams it saw.
    async fn resetting_server(reason: h2::Reason) -> (String, Arc<Mutex<usize>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let streams = Arc::new(Mutex::new(0));
        let seen = Arc::clone(&streams);
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            let mut connection = h2::server::handshake(socket).await.expect("handshake");
            while let Some(Ok((_, mut respond))) = connection.accept().await {
                let first = {
                    let mut seen = seen.lock().expect("seen");
                    *seen += 1;
                    *seen == 1
                };
                if first {
                    respond.send_reset(reason);
                    continue;
                }
                let ok = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "0")
                    .body(())
                    .expect("response");
                let _ = respond.send_response(ok, true);
            }
        });
        (url, streams)
    }

    /// A draining or overloaded server refuses a stream before any handler
    /// saw it: even a write is sent again. Any other reset may have run.
    #[tokio::test]
    async fn a_write_refused_before_processing_is_sent_again() {
        for (reason, sent) in [
            (h2::Reason::REFUSED_STREAM, 2),
            (h2::Reason::INTERNAL_ERROR, 1),
        ] {
            let (url, streams) = resetting_server(reason).await;
            let channel = tonic::transport::Endpoint::from_shared(url)
                .expect("url")
                .connect()
                .await
                .expect("connect");
            let mut retrying = RetryCalls::new(channel, only_reads());
            let answer = retrying
                .ready()
                .await
                .expect("ready")
                .call(call(WRITE))
                .await;
            assert_eq!(answer.is_ok(), sent == 2, "{reason:?}");
            assert_eq!(*streams.lock().expect("streams"), sent, "{reason:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_gets_only_what_is_left_of_the_deadline() {
        let (upstream, received) = upstream(usize::MAX, unavailable);
        let mut retrying = RetryCalls::new(upstream, only_reads());
        let mut request = call(READ);
        request
            .headers_mut()
            .insert("grpc-timeout", http::HeaderValue::from_static("30m"));
        let _ = retrying.ready().await.expect("ready").call(request).await;
        // 30 ms: the first attempt, then one retry after a 20 ms pause with
        // about 10 ms left; a second pause would outlast the deadline.
        assert_eq!(received.lock().expect("received").len(), 2);
        assert_eq!(
            grpc_timeout(&http::HeaderMap::from_iter([(
                http::header::HeaderName::from_static("grpc-timeout"),
                http::HeaderValue::from_static("2S"),
            )])),
            Some(Duration::from_secs(2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_budget_is_spent() {
        let (upstream, received) = upstream(usize::MAX, unavailable);
        let mut retrying = RetryCalls::new(upstream, only_reads());
        for _ in 0..200 {
            let _ = retrying
                .ready()
                .await
                .expect("ready")
                .call(call(READ))
                .await;
        }
        // Unbudgeted: 200 calls and 400 retries. The budget allows its
        // reserve (10 a second over 10 s) plus 20% of the calls.
        let sent = received.lock().expect("received").len();
        assert!(sent <= 200 + 100 + 40 + 2, "{sent} attempts");
        assert!(sent > 200, "no retry at all");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_limit() {
        let (upstream, received) = upstream(usize::MAX, unavailable);
        let mut retrying = RetryCalls::new(upstream, only_reads());
        let answer = retrying
            .ready()
            .await
            .expect("ready")
            .call(call(READ))
            .await;
        assert!(answer.is_ok_and(|r| r.headers()["grpc-status"] == "14"));
        assert_eq!(received.lock().expect("received").len(), 1 + MAX_RETRIES);
    }

    #[test]
    fn no_method_streams_its_requests() {
        let files = FileDescriptorSet::decode(quill_proto::FILE_DESCRIPTOR_SET).expect("decodes");
        for file in files.file {
            for service in &file.service {
                for method in &service.method {
                    assert!(
                        !method.client_streaming(),
                        "{}.{}: a streamed request cannot be kept to send again; \
                         RetryCalls must pass such calls through unbuffered",
                        service.name(),
                        method.name()
                    );
                }
            }
        }
    }

    #[test]
    fn the_contracts_declare_their_reads_safe_and_their_writes_not() {
        let safe = declared_safe();
        assert!(safe("/quill.content.v1.ContentService/GetArticle"));
        assert!(safe("/quill.auth.v1.AuthService/CheckSession"));
        assert!(safe(
            "/quill.notification.v1.NotificationService/ListNotifications"
        ));
        assert!(!safe("/quill.content.v1.ContentService/CreateArticle"));
        assert!(!safe("/quill.auth.v1.AuthService/Login"));
        assert!(!safe("/quill.notification.v1.NotificationService/MarkRead"));
    }
}
