//! Client-side balancing over every healthy replica of an upstream.
//!
//! One HTTP/2 connection to a Kubernetes ClusterIP Service reaches one pod,
//! and every call of that caller then goes to it: replicas an autoscaler adds
//! get nothing. So a caller resolves the upstream's name to all its
//! addresses (a headless Service: DNS answers with every ready pod), keeps a
//! connection to each, and spreads calls over them with tower's
//! power-of-two-choices balancer (`Channel::balance_channel`). Like grpc's
//! DNS resolver it re-resolves periodically, and at once when an endpoint
//! stops answering; an endpoint whose health reports the service
//! NOT_SERVING (draining, or its database down) leaves the set until it
//! serves again. A comma-separated list of URLs works too (Compose, local
//! runs with a replica per port): each entry is resolved the same way.

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
use tokio::sync::mpsc::Sender;
use tonic::transport::{Channel, Endpoint, channel::Change};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How often names are resolved again and endpoints' health re-checked:
/// well within a draining replica's `SHUTDOWN_DELAY_SECS`.
const REFRESH: Duration = Duration::from_secs(2);
/// How long a health check or a connection attempt may take.
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
        let mut serving: BTreeSet<SocketAddr> = BTreeSet::new();
        // Each address's endpoint, and a channel of its own for health checks.
        let mut probes: BTreeMap<SocketAddr, (Endpoint, Channel)> = BTreeMap::new();
        loop {
            let found = self.resolve().await;
            probes.retain(|addr, _| found.contains(addr));
            let mut healthy = BTreeSet::new();
            for addr in &found {
                let (_, probe) = match probes.entry(*addr) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(new) => match endpoint(*addr) {
                        Ok(endpoint) => {
                            let probe = endpoint.connect_lazy();
                            new.insert((endpoint, probe))
                        }
                        Err(e) => {
                            tracing::warn!(upstream = %self.setting, endpoint = %addr, error = %e, "unusable endpoint");
                            continue;
                        }
                    },
                };
                if self.is_serving(probe.clone()).await {
                    healthy.insert(*addr);
                }
            }
            // None healthy: try them all rather than wait on an empty set
            // (the panic threshold of service meshes); a call then fails
            // fast on a dead endpoint instead of hanging until its deadline.
            let lost = healthy.len() < serving.len() || healthy.len() < found.len();
            if healthy.is_empty() {
                healthy.clone_from(&found);
            }
            for gone in serving.difference(&healthy) {
                tracing::info!(upstream = %self.setting, endpoint = %gone, "endpoint left the balancer");
                if changes.send(Change::Remove(*gone)).await.is_err() {
                    return;
                }
            }
            for new in healthy.difference(&serving) {
                let Some((endpoint, _)) = probes.get(new) else {
                    continue;
                };
                tracing::info!(upstream = %self.setting, endpoint = %new, "endpoint joined the balancer");
                if changes
                    .send(Change::Insert(*new, endpoint.clone()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // An endpoint just lost: look again soon, as grpc's resolver does
            // on a connection failure, instead of after a whole period.
            serving = healthy;
            let wait = if lost { self.refresh / 5 } else { self.refresh };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = changes.closed() => return,
            }
        }
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

    async fn is_serving(&self, probe: Channel) -> bool {
        let mut client = HealthClient::new(probe);
        let check = client.check(HealthCheckRequest {
            service: self.service.to_owned(),
        });
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, check).await,
            Ok(Ok(answer)) if answer.get_ref().status() == ServingStatus::Serving
        )
    }
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
