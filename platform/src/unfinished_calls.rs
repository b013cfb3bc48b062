//! A unary call whose request message never arrived was ended by its
//! client, not failed by the server. A client that gives up on a call (its
//! own caller went away, a deadline passed) resets the HTTP/2 stream;
//! hyper reads a reset with CANCEL or NO_ERROR as the end of the request
//! body, so a call reset before its message arrived reaches tonic as an
//! empty body, which tonic answers with INTERNAL "Missing request message."
//! Logged as `response failed` at ERROR, that line would page someone for
//! a client's choice. This layer relabels it CANCELLED (the one outcome
//! that is the caller's, per the gRPC status codes), which the trace and
//! the metrics then record as such. A client that sends no message on
//! purpose gets CANCELLED too: its call never started either.

use std::task::{Context, Poll};

use futures::future::{MapOk, TryFutureExt};
use http::HeaderValue;

/// What tonic answers for a unary call with an empty body
/// (`tonic::server::Grpc`), percent-encoded as `grpc-message` is.
const TONIC_MISSING_MESSAGE: &str = "Missing%20request%20message.";

const CANCELLED: HeaderValue = HeaderValue::from_static("1");
const INTERNAL: &str = "13";
const ENDED_BY_CLIENT: HeaderValue =
    HeaderValue::from_static("the%20call%20ended%20before%20its%20request%20message%20arrived");

#[derive(Debug, Clone, Copy, Default)]
pub struct UnfinishedCallsLayer;

impl<S> tower::Layer<S> for UnfinishedCallsLayer {
    type Service = UnfinishedCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UnfinishedCalls { inner }
    }
}

#[derive(Debug, Clone)]
pub struct UnfinishedCalls<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for UnfinishedCalls<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(http::Response<R>) -> http::Response<R>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.inner.call(request).map_ok(relabel::<R>)
    }
}

/// tonic answers this error trailers-only: the status is in the headers.
fn relabel<R>(mut response: http::Response<R>) -> http::Response<R> {
    let headers = response.headers_mut();
    let unfinished = headers.get("grpc-status").is_some_and(|s| s == INTERNAL)
        && headers
            .get("grpc-message")
            .is_some_and(|m| m == TONIC_MISSING_MESSAGE);
    if unfinished {
        headers.insert("grpc-status", CANCELLED);
        headers.insert("grpc-message", ENDED_BY_CLIENT);
        headers.remove("grpc-status-details-bin");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &'static str, message: &'static str) -> http::Response<()> {
        let mut response = http::Response::new(());
        let headers = response.headers_mut();
        headers.insert("grpc-status", HeaderValue::from_static(status));
        headers.insert("grpc-message", HeaderValue::from_static(message));
        response
    }

    #[test]
    fn only_tonics_missing_message_is_relabelled() {
        let relabelled = relabel(answer("13", TONIC_MISSING_MESSAGE));
        assert_eq!(relabelled.headers()["grpc-status"], "1");
        assert_eq!(relabelled.headers()["grpc-message"], ENDED_BY_CLIENT);

        for (status, message) in [("13", "database is down"), ("3", TONIC_MISSING_MESSAGE)] {
            let kept = relabel(answer(status, message));
            assert_eq!(kept.headers()["grpc-status"], status);
            assert_eq!(kept.headers()["grpc-message"], message);
        }
    }
}
