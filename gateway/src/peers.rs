//! Replicas of the gateway agree on load: each serves its own counts at `GET /internal/load`
//! (in flight plus held, per Server), and each scaler adds its peers' counts to its own before
//! sizing a Server. Every replica then asks for the same replicas from the same total, and
//! their writes of `spec.replicas` agree.
//!
//! Peers are the ready addresses of the gateway's own Service (its EndpointSlices), this pod's
//! address left out, or a fixed list.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::watch;

use crate::table::{SERVICE_NAME_LABEL, ServerKey};

/// Where a gateway finds its peers.
#[derive(Clone, Debug, Default)]
pub enum PeerSource {
    /// A single gateway.
    #[default]
    None,
    /// Fixed addresses of the peers' HTTP fronts.
    Fixed(Vec<SocketAddr>),
    /// The ready endpoints of a Service of the gateway, less this pod's own address.
    Service {
        namespace: String,
        name: String,
        own: Option<IpAddr>,
    },
}

/// A report as served: `namespace/name` → in flight plus held.
pub type Report = BTreeMap<String, u32>;

/// The report of these counts.
pub fn report(counts: &HashMap<ServerKey, (u32, u32)>) -> Report {
    counts
        .iter()
        .map(|(k, (in_flight, held))| (k.to_string(), in_flight + held))
        .collect()
}

/// Adds the peers' reports, per Server.
pub fn sum(reports: &[Report]) -> HashMap<ServerKey, u32> {
    let mut total: HashMap<ServerKey, u32> = HashMap::new();
    for r in reports {
        for (k, n) in r {
            if let Some((namespace, name)) = k.split_once('/') {
                *total
                    .entry(ServerKey {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    })
                    .or_default() += n;
            }
        }
    }
    total
}

/// The current peers' addresses.
pub fn follow(client: kube::Client, source: PeerSource) -> watch::Receiver<Vec<SocketAddr>> {
    match source {
        PeerSource::None => watch::channel(Vec::new()).1,
        PeerSource::Fixed(peers) => {
            let (tx, rx) = watch::channel(peers);
            // The list never changes: keep the sender for the life of the process.
            tokio::spawn(async move { tx.closed().await });
            rx
        }
        PeerSource::Service {
            namespace,
            name,
            own,
        } => {
            let (tx, rx) = watch::channel(Vec::new());
            tokio::spawn(async move {
                let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
                let (store, writer) = reflector::store();
                let selector = format!("{SERVICE_NAME_LABEL}={name}");
                let mut events = std::pin::pin!(
                    reflector(
                        writer,
                        watcher(api, watcher::Config::default().labels(&selector))
                    )
                    .default_backoff()
                );
                while let Some(event) = events.next().await {
                    if let Err(e) = event {
                        tracing::warn!(error = %e, "watching the gateway's peers (retrying)");
                        continue;
                    }
                    let mut peers: Vec<SocketAddr> = store
                        .state()
                        .iter()
                        .flat_map(|s| crate::table::ready_addresses(s))
                        .filter(|a| Some(a.ip()) != own)
                        .collect();
                    peers.sort();
                    peers.dedup();
                    tx.send_if_modified(|cur| {
                        if *cur == peers {
                            false
                        } else {
                            *cur = peers;
                            true
                        }
                    });
                }
            });
            rx
        }
    }
}

/// Every peer's report, fetched at once; a peer that does not answer within `timeout` is
/// left out (and logged).
pub async fn fetch(
    client: &Arc<PeerClient>,
    peers: &[SocketAddr],
    timeout: Duration,
) -> Vec<Report> {
    let asks = peers.iter().map(|p| {
        let client = client.clone();
        let p = *p;
        async move {
            match tokio::time::timeout(timeout, client.load_of(p)).await {
                Ok(Ok(r)) => Some(r),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %p, error = %e, "a peer's load is unknown");
                    None
                }
                Err(_) => {
                    tracing::debug!(peer = %p, "a peer's load did not come in time");
                    None
                }
            }
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The HTTP client the scaler asks its peers with.
pub struct PeerClient {
    inner: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Default for PeerClient {
    fn default() -> PeerClient {
        PeerClient {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl PeerClient {
    /// A peer's report.
    pub async fn load_of(&self, peer: SocketAddr) -> Result<Report, String> {
        let req = hyper::Request::get(format!("http://{peer}/internal/load"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = self.inner.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_add_up_per_server() {
        let k = |n: &str| ServerKey {
            namespace: "a".into(),
            name: n.into(),
        };
        let own = HashMap::from([(k("x"), (2, 1)), (k("y"), (0, 4))]);
        let r = report(&own);
        assert_eq!(r, Report::from([("a/x".into(), 3), ("a/y".into(), 4)]));
        let peer = Report::from([("a/x".into(), 5), ("b/z".into(), 1), ("junk".into(), 9)]);
        let total = sum(&[r, peer]);
        assert_eq!(total[&k("x")], 8);
        assert_eq!(total[&k("y")], 4);
        assert_eq!(
            total[&ServerKey {
                namespace: "b".into(),
                name: "z".into()
            }],
            1
        );
        assert_eq!(total.len(), 3, "a key without a namespace is dropped");
    }
}
