//! The edge request id (`x-request-id`) of the call being served, so every
//! hop it causes carries it on: the gRPC calls a handler makes (the client
//! side of [`crate::grpc`] adds the header) and the events it raises (the
//! envelope keeps it, the consumer serves its handler under it). One grep
//! then finds a request's every log line, in every process.
//!
//! A task-local, not a span field: spans can be written but not read back.
//! Work a handler spawns onto other tasks runs without it.

use std::{
    future::Future,
    task::{Context, Poll},
};

use tokio::task::futures::TaskLocalFuture;

use crate::grpc::REQUEST_ID;

tokio::task_local! {
    static CURRENT: String;
}

/// The request id of the call or event being handled, if any.
pub fn current() -> Option<String> {
    CURRENT
        .try_with(Clone::clone)
        .ok()
        .filter(|id| !id.is_empty())
}

/// Runs `work` as part of the request `id`.
pub fn scope<F: Future>(id: String, work: F) -> TaskLocalFuture<String, F> {
    CURRENT.scope(id, work)
}

/// Copies the current request id into an outgoing call's headers, unless
/// the call names one already.
pub fn propagate(headers: &mut http::HeaderMap) {
    if headers.contains_key(REQUEST_ID) {
        return;
    }
    if let Some(value) = current().and_then(|id| http::HeaderValue::try_from(id).ok()) {
        headers.insert(REQUEST_ID, value);
    }
}

/// Server middleware: serves each call under the request id its metadata
/// carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = Scoped<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Scoped { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Scoped<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Scoped<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<String, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        scope(id, self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outgoing_call_carries_the_current_request_id() {
        let mut outside = http::HeaderMap::new();
        propagate(&mut outside);
        assert!(outside.is_empty(), "no request, no header");

        let headers = scope("req-1".to_owned(), async {
            let mut headers = http::HeaderMap::new();
            propagate(&mut headers);
            let mut named = http::HeaderMap::new();
            named.insert(REQUEST_ID, http::HeaderValue::from_static("req-0"));
            propagate(&mut named);
            (headers, named)
        })
        .await;
        assert_eq!(headers.0[REQUEST_ID], "req-1");
        assert_eq!(headers.1[REQUEST_ID], "req-0", "the call's own id wins");
    }
}
