//! Client-side balancing over every healthy replica of an upstream.
//!
//! One HTTP/2 connection to a Kubernetes ClusterIP Service reaches one pod,
//! and every call of that caller then goes to it: replicas an autoscaler adds
//! get nothing. So a caller resolves the upstream's name to all its
//! addresses (a headless Service: DNS answers with every ready pod), keeps a
//! connection to each, and spreads calls over them with tower's
//! power-of-two-choices balancer (`Channel::balance_channel`). Like grpc's
//! DNS resolver it re-resolves periodically. Each endpoint's health is
//! watched (`grpc.health.v1.Health/Watch`): an endpoint leaves the set the
//! moment its watch reports the service NOT_SERVING (draining, or its
//! database down) or breaks (the process died), not at the next poll, and
//! comes back when a new watch, opened at each resolution, finds it serving.
//! A comma-separated list of URLs works too (Compose, local runs with a
//! replica per port): each entry is resolved the same way.

use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use quill_proto::{
    auth::v1::auth_service_server, content::v1::content_service_server,
    notification::v1::notification_service_server,
};
use tokio::{
    sync::mpsc::{self, Sender, UnboundedSender},
    task::JoinHandle,
};
use tonic::transport::{Channel, Endpoint, channel::Change};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How often names are resolved again and endpoints that do not serve are
/// asked again.
const REFRESH: Duration = Duration::from_secs(2);
/// How long opening a health watch (its first answer) or a connection may
/// take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves `host:port` to addresses; `tokio::net::lookup_host` unless a
/// test supplies its own.
pub type Resolver =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("{setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

/// An upstream's replicas: where they are and which service their health
/// must report SERVING.
#[derive(Clone)]
pub struct Upstream {
    /// The setting the URLs came from, for errors and logs.
    pub setting: String,
    /// `host:port` of each URL.
    targets: Vec<String>,
    /// The gRPC service name whose health decides (`quill.auth.v1.AuthService`).
    pub service: &'static str,
    resolver: Resolver,
    refresh: Duration,
}

impl Upstream {
    /// `urls` is one `http://host:port` or a comma-separated list of them.
    pub fn parse(setting: &str, urls: &str, service: &'static str) -> Result<Self, BalanceError> {
        let invalid = |reason: String| BalanceError::Invalid {
            setting: setting.to_owned(),
            reason,
        };
        let targets = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                let authority = url
                    .strip_prefix("http://")
                    .ok_or_else(|| invalid(format!("{url:?} is not an http:// URL")))?
                    .trim_end_matches('/');
                if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
                    return Err(invalid(format!("{url:?} must be http://host:port")));
                }
                Ok(authority.to_owned())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(invalid("names no URL".to_owned()));
        }
        Ok(Self {
            setting: setting.to_owned(),
            targets,
            service,
            resolver: Arc::new(|target| {
                Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
            }),
            refresh: REFRESH,
        })
    }

    /// Resolves names with `resolver` instead of DNS (tests).
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Re-resolves and re-checks every `refresh` (tests shorten it).
    pub fn refreshing_every(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// A channel spreading calls over the upstream's healthy replicas, kept
    /// current by a task that lives as long as the channel is used.
    pub fn channel(self) -> Channel {
        let (channel, changes) = Channel::balance_channel(64);
        tokio::spawn(self.discover(changes));
        channel
    }

    async fn discover(self, changes: Sender<Change<SocketAddr, Endpoint>>) {
        let (report, mut reports) = mpsc::unbounded_channel();
        let mut watched: BTreeMap<SocketAddr, Watched> = BTreeMap::new();
        // What the balancer holds.
        let mut serving: BTreeSet<SocketAddr> = BTreeSet::new();
        let mut generation = 0_u64;
        let mut next_resolution = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_resolution {
                let found = self.resolve().await;
                watched.retain(|addr, _| found.contains(addr));
                for addr in found {
                    let endpoint = match watched.entry(addr) {
                        Entry::Occupied(known) if !known.get().watcher.is_finished() => continue,
                        Entry::Occupied(known) => known.get().endpoint.clone(),
                        Entry::Vacant(_) => match endpoint(addr) {
                            Ok(endpoint) => endpoint,
                            Err(e) => {
                                tracing::warn!(upstream = %self.setting, endpoint = %addr, error = %e, "unusable endpoint");
                                continue;
                            }
                        },
                    };
                    generation += 1;
                    let watcher = tokio::spawn(watch(
                        endpoint.connect_lazy(),
                        self.service,
                        Report {
                            to: report.clone(),
                            addr,
                            generation,
                        },
                    ));
                    watched.insert(
                        addr,
                        Watched {
                            endpoint,
                            watcher,
                            generation,
                            serving: false,
                        },
                    );
                }
                next_resolution = tokio::time::Instant::now() + self.refresh;
            }
            if !self.apply(&watched, &mut serving, &changes).await {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(next_resolution) => {}
                Some((addr, generation, up)) = reports.recv() => {
                    // A watcher replaced since may still have spoken.
                    if let Some(known) = watched.get_mut(&addr).filter(|w| w.generation == generation) {
                        known.serving = up;
                    }
                }
                () = changes.closed() => return,
            }
        }
    }

    /// Brings the balancer's set in line with what the watches report;
    /// `false` once the channel is gone.
    async fn apply(
        &self,
        watched: &BTreeMap<SocketAddr, Watched>,
        serving: &mut BTreeSet<SocketAddr>,
        changes: &Sender<Change<SocketAddr, Endpoint>>,
    ) -> bool {
        let mut wanted: BTreeSet<SocketAddr> = watched
            .iter()
            .filter(|(_, w)| w.serving)
            .map(|(addr, _)| *addr)
            .collect();
        // None serving: try them all rather than wait on an empty set (the
        // panic threshold of service meshes); a call then fails fast on a
        // dead endpoint instead of hanging until its deadline.
        if wanted.is_empty() {
            wanted = watched.keys().copied().collect();
        }
        for gone in serving.difference(&wanted) {
            tracing::info!(upstream = %self.setting, endpoint = %gone, "endpoint left the balancer");
            if changes.send(Change::Remove(*gone)).await.is_err() {
                return false;
            }
        }
        for new in wanted.difference(serving) {
            tracing::info!(upstream = %self.setting, endpoint = %new, "endpoint joined the balancer");
            let endpoint = watched[new].endpoint.clone();
            if changes.send(Change::Insert(*new, endpoint)).await.is_err() {
                return false;
            }
        }
        *serving = wanted;
        true
    }

    /// Every address of every target; a target that does not resolve now
    /// contributes nothing (its replicas may all be restarting).
    async fn resolve(&self) -> BTreeSet<SocketAddr> {
        let mut found = BTreeSet::new();
        for target in &self.targets {
            match (self.resolver)(target.clone()).await {
                Ok(addrs) => found.extend(addrs),
                Err(e) => {
                    tracing::warn!(upstream = %self.setting, %target, error = %e, "cannot resolve upstream");
                }
            }
        }
        found
    }
}

/// One resolved address: its endpoint, the task watching its health, and
/// what that task last reported.
struct Watched {
    endpoint: Endpoint,
    watcher: JoinHandle<()>,
    generation: u64,
    serving: bool,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Where a watcher reports: `(address, generation, serving)`.
struct Report {
    to: UnboundedSender<(SocketAddr, u64, bool)>,
    addr: SocketAddr,
    generation: u64,
}

impl Report {
    fn send(&self, serving: bool) {
        let _ = self.to.send((self.addr, self.generation, serving));
    }
}

/// Follows one endpoint's health for `service` until it stops serving or
/// the watch breaks; reports each status. It ends on NOT_SERVING rather
/// than hold the stream open: a draining server waits for its open calls,
/// and the next resolution asks again anyway.
async fn watch(probe: Channel, service: &'static str, report: Report) {
    let mut client = HealthClient::new(probe);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let opened = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut stream = client.watch(request).await?.into_inner();
        let first = stream.message().await?;
        Ok::<_, tonic::Status>((stream, first))
    })
    .await;
    let Ok(Ok((mut stream, mut next))) = opened else {
        return report.send(false);
    };
    while let Some(answer) = next {
        let serving = answer.status() == ServingStatus::Serving;
        report.send(serving);
        if !serving {
            return;
        }
        // A broken watch ends like a closed one: not serving.
        next = stream.message().await.unwrap_or_default();
    }
    report.send(false);
}

/// A balanced channel to auth's replicas at `urls` (`AUTH_URL`).
pub fn to_auth(urls: &str) -> Result<Channel, BalanceError> {
    Ok(Upstream::parse("AUTH_URL", urls, auth_service_server::SERVICE_NAME)?.channel())
}

/// A balanced channel to content's replicas at `urls` (`CONTENT_URL`).
pub fn to_content(urls: &str) -> Result<Channel, BalanceError> {
    Ok(Upstream::parse("CONTENT_URL", urls, content_service_server::SERVICE_NAME)?.channel())
}

/// A balanced channel to notification's replicas at `urls` (`NOTIFICATION_URL`).
pub fn to_notification(urls: &str) -> Result<Channel, BalanceError> {
    Ok(Upstream::parse(
        "NOTIFICATION_URL",
        urls,
        notification_service_server::SERVICE_NAME,
    )?
    .channel())
}

fn endpoint(addr: SocketAddr) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CHECK_TIMEOUT)
        .tcp_nodelay(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_a_list_of_them() {
        let one = Upstream::parse("AUTH_URL", "http://quill-auth:50051", "s").unwrap();
        assert_eq!(one.targets, ["quill-auth:50051"]);
        let list =
            Upstream::parse("AUTH_URL", "http://127.0.0.1:1, http://127.0.0.1:2/", "s").unwrap();
        assert_eq!(list.targets, ["127.0.0.1:1", "127.0.0.1:2"]);
        for bad in [
            "",
            ",",
            "quill-auth:50051",
            "https://x:1",
            "http://x",
            "http://x:1/path",
        ] {
            assert!(Upstream::parse("AUTH_URL", bad, "s").is_err(), "{bad:?}");
        }
    }
}
