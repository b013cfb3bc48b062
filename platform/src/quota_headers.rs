//! The IETF rate-limit headers (draft-ietf-httpapi-ratelimit-headers), so
//! clients can pace themselves instead of learning the limit from a 429:
//!
//! ```text
//! RateLimit-Policy: "writes:user";q=30;w=60
//! RateLimit: "writes:user";r=29;t=41
//! ```
//!
//! Each budget a call counts against ([`crate::rate_limit::RateLimiter`])
//! is reported into the call's scope. A service's gRPC server writes the
//! scope out as response metadata of the same names (grpcurl shows them);
//! the gateway relays what its upstreams reported, adds its own, and writes
//! them on the HTTP response, success or 429 alike.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, HeaderName, HeaderValue};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One budget as it stands after this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The budget's name (`writes:user`).
    pub policy: &'static str,
    pub limit: u32,
    pub window: Duration,
    pub remaining: u64,
    /// Until the window ends.
    pub reset: Duration,
}

#[derive(Debug, Default)]
struct Reported {
    own: Vec<Quota>,
    /// Items an upstream reported, as it wrote them.
    relayed_policies: Vec<String>,
    relayed_states: Vec<String>,
}

tokio::task_local! {
    static REPORTED: RefCell<Reported>;
}

/// Runs `call` with a scope its budgets report into, and answers with
/// the headers they make (empty if none was counted).
pub async fn scope<F: Future>(call: F) -> (F::Output, HeaderMap) {
    REPORTED
        .scope(RefCell::new(Reported::default()), async {
            let output = call.await;
            let headers = REPORTED.with(|reported| headers(&reported.borrow()));
            (output, headers)
        })
        .await
}

/// Records `quota` in the current scope, replacing an earlier report of
/// the same budget; outside any scope it goes nowhere.
pub(crate) fn report(quota: Quota) {
    let _ = REPORTED.try_with(|reported| {
        let own = &mut reported.borrow_mut().own;
        own.retain(|q| q.policy != quota.policy);
        own.push(quota);
    });
}

/// One event counted against `policy` was given back.
pub(crate) fn report_released(policy: &str) {
    let _ = REPORTED.try_with(|reported| {
        if let Some(quota) = reported
            .borrow_mut()
            .own
            .iter_mut()
            .find(|q| q.policy == policy)
        {
            quota.remaining = (quota.remaining + 1).min(u64::from(quota.limit));
        }
    });
}

/// Relays what an upstream call's response reported.
pub fn relay(upstream: &HeaderMap) {
    let _ = REPORTED.try_with(|reported| {
        let mut reported = reported.borrow_mut();
        let reported = &mut *reported;
        for (name, list) in [
            (RATELIMIT_POLICY, &mut reported.relayed_policies),
            (RATELIMIT, &mut reported.relayed_states),
        ] {
            for value in upstream.get_all(name) {
                if let Ok(value) = value.to_str() {
                    list.push(value.to_owned());
                }
            }
        }
    });
}

fn headers(reported: &Reported) -> HeaderMap {
    let mut policies: Vec<String> = reported
        .own
        .iter()
        .map(|q| format!("\"{}\";q={};w={}", q.policy, q.limit, q.window.as_secs()))
        .collect();
    let mut states: Vec<String> = reported
        .own
        .iter()
        .map(|q| format!("\"{}\";r={};t={}", q.policy, q.remaining, q.reset.as_secs()))
        .collect();
    policies.extend(reported.relayed_policies.iter().cloned());
    states.extend(reported.relayed_states.iter().cloned());
    let mut headers = HeaderMap::new();
    for (name, items) in [(RATELIMIT_POLICY, policies), (RATELIMIT, states)] {
        if items.is_empty() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&items.join(", ")) {
            headers.insert(name, value);
        }
    }
    headers
}

/// The gRPC server layer: every call's budgets, as response metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaHeadersLayer;

impl<S> tower::Layer<S> for QuotaHeadersLayer {
    type Service = QuotaHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaHeaders { inner }
    }
}

#[derive(Debug, Clone)]
pub struct QuotaHeaders<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for QuotaHeaders<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let (answer, quotas) = scope(call).await;
            answer.map(|mut response| {
                response.headers_mut().extend(quotas);
                response
            })
        })
    }
}

/// A client channel whose responses' budgets are relayed into the
/// caller's scope (the gateway, for the REST answer).
#[derive(Debug, Clone)]
pub struct Relaying<S> {
    inner: S,
}

impl<S> Relaying<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Relaying<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(http::Response<R>) -> http::Response<R>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use futures::TryFutureExt as _;
        self.inner.call(request).map_ok(|response| {
            relay(response.headers());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(remaining: u64) -> Quota {
        Quota {
            policy: "writes:user",
            limit: 30,
            window: Duration::from_secs(60),
            remaining,
            reset: Duration::from_secs(41),
        }
    }

    #[tokio::test]
    async fn a_scope_writes_its_own_and_relayed_budgets() {
        let (_, headers) = scope(async {
            report(writes(29));
            report(writes(28));
            let mut upstream = HeaderMap::new();
            upstream.insert(
                RATELIMIT_POLICY,
                HeaderValue::from_static("\"upload\";q=5;w=60"),
            );
            upstream.insert(RATELIMIT, HeaderValue::from_static("\"upload\";r=4;t=60"));
            relay(&upstream);
        })
        .await;
        assert_eq!(
            headers[RATELIMIT_POLICY],
            "\"writes:user\";q=30;w=60, \"upload\";q=5;w=60"
        );
        assert_eq!(
            headers[RATELIMIT],
            "\"writes:user\";r=28;t=41, \"upload\";r=4;t=60"
        );
    }

    #[tokio::test]
    async fn a_release_gives_the_event_back_up_to_the_limit() {
        let (_, headers) = scope(async {
            report(writes(29));
            report_released("writes:user");
            report_released("writes:user");
        })
        .await;
        assert_eq!(headers[RATELIMIT], "\"writes:user\";r=30;t=41");
    }

    #[tokio::test]
    async fn no_budget_no_headers_and_no_scope_no_harm() {
        report(writes(1));
        let ((), headers) = scope(async {}).await;
        assert!(headers.is_empty());
    }
}
