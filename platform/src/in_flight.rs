//! The calls a gRPC server has in flight, so its drain ends when they do.
//!
//! tonic's graceful shutdown returns only once every client has closed its
//! connection. A client that keeps an idle connection open after GOAWAY,
//! or never answers the shutdown's PING, holds the drain until its
//! deadline (hyper#4170): under a rolling restart that is the whole grace
//! period, and the pod is killed with its background work (relay,
//! consumers) unfinished. A call is in flight from the moment it reaches
//! the server's layers until its response body has been sent or dropped,
//! so a server-streaming call counts for as long as it streams.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;

/// How long a server must have had no call in flight, and seen none
/// start, before it counts as settled: a call the connection accepted in
/// the round trip before its final GOAWAY still reaches the layers, later
/// on a loaded machine. Short next to the drain's bound, so generous.
const QUIET: Duration = Duration::from_millis(250);

/// Counts a server's calls in flight; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    calls: AtomicUsize,
    started: AtomicU64,
    finished: Notify,
}

impl InFlight {
    pub fn layer(&self) -> InFlightLayer {
        InFlightLayer {
            in_flight: self.clone(),
        }
    }

    /// Calls in flight now.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::Acquire)
    }

    /// Resolves once no call is in flight and none has started for
    /// [`QUIET`]; call it after the server stopped taking new connections.
    pub async fn settled(&self) {
        loop {
            let finished = self.shared.finished.notified();
            if self.calls() > 0 {
                finished.await;
                continue;
            }
            let started = self.shared.started.load(Ordering::Acquire);
            tokio::time::sleep(QUIET).await;
            if self.calls() == 0 && self.shared.started.load(Ordering::Acquire) == started {
                return;
            }
        }
    }

    fn start(&self) -> Call {
        self.shared.started.fetch_add(1, Ordering::AcqRel);
        self.shared.calls.fetch_add(1, Ordering::AcqRel);
        Call {
            in_flight: self.clone(),
        }
    }
}

/// One call in flight; it ends when this drops.
#[derive(Debug)]
struct Call {
    in_flight: InFlight,
}

impl Drop for Call {
    fn drop(&mut self) {
        let shared = &self.in_flight.shared;
        if shared.calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.finished.notify_waiters();
        }
    }
}

#[derive(Debug, Clone)]
pub struct InFlightLayer {
    in_flight: InFlight,
}

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            in_flight: self.in_flight.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Counted<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        CountedFuture {
            call: Some(self.in_flight.start()),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<CountedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let call = this.call.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody { inner, _call: call })))
    }
}

pin_project! {
    /// A response body that keeps its call in flight until it is dropped.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        _call: Option<Call>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    fn server(
        in_flight: &InFlight,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<CountedBody<Full<Bytes>>>,
        Error = std::convert::Infallible,
    > {
        in_flight
            .layer()
            .layer(tower::service_fn(|_: http::Request<()>| async {
                Ok(http::Response::new(Full::new(Bytes::from_static(
                    b"answer",
                ))))
            }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_in_flight_until_its_body_is_gone() {
        let in_flight = InFlight::default();
        let response = server(&in_flight)
            .oneshot(http::Request::new(()))
            .await
            .expect("answer");
        assert_eq!(in_flight.calls(), 1, "the body is still to be sent");

        let settled = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.settled().await }
        });
        tokio::time::sleep(QUIET * 4).await;
        assert!(!settled.is_finished(), "settled with a call in flight");

        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), "answer");
        assert_eq!(in_flight.calls(), 0);
        tokio::time::timeout(QUIET * 2, settled)
            .await
            .expect("settles once the call is done")
            .expect("task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_starts_during_the_quiet_period_is_waited_for() {
        let in_flight = InFlight::default();
        let settled = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.settled().await }
        });
        tokio::time::sleep(QUIET / 2).await;
        let response = server(&in_flight)
            .oneshot(http::Request::new(()))
            .await
            .expect("answer");
        tokio::time::sleep(QUIET).await;
        assert!(
            !settled.is_finished(),
            "settled under a call that started late"
        );
        drop(response);
        tokio::time::timeout(QUIET * 3, settled)
            .await
            .expect("settles after it")
            .expect("task");
    }
}
