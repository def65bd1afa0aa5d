//! The gateway's I/O: watches that keep the routing table current, and the loop that writes
//! each autoscaled Server's `spec.replicas` through its scale subresource.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use prometheus_client::registry::Registry;
use serde_json::json;
use substratus_core::names::Kind;
use substratus_crds::Server;
use tokio::sync::{Notify, watch};

use crate::load::Loads;
use crate::metrics::{Metrics, ScaleLabels, ServerLabels};
use crate::peers::{PeerClient, PeerSource};
use crate::proxy::{Gateway, Options};
use crate::scale::{Policy, Recommender};
use crate::table::{SERVICE_NAME_LABEL, ServerKey, Table};

/// Where the gateway listens and what it watches.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Only this namespace's Servers, or every namespace's.
    pub namespace: Option<String>,
    /// How often the scaler looks at the load.
    pub scale_every: Duration,
    /// Other replicas of the gateway, whose loads count too.
    pub peers: PeerSource,
    pub options: Options,
}

/// A gateway with its metrics registered, ready to serve.
pub struct Prepared {
    client: kube::Client,
    settings: Settings,
    metrics: Metrics,
}

/// Registers the gateway's metrics in `registry`.
pub fn prepare(client: kube::Client, settings: Settings, registry: &mut Registry) -> Prepared {
    Prepared {
        client,
        settings,
        metrics: Metrics::new(registry),
    }
}

impl Prepared {
    /// Runs the gateway until `stop` completes: the watches, the scaler and the HTTP front.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Prepared {
            client,
            settings,
            metrics,
        } = self;
        let loads = Loads::default();
        let (table_tx, table_rx) = watch::channel(Arc::new(Table::default()));
        let wake = Arc::new(Notify::new());
        let gateway = Gateway::new(
            table_rx.clone(),
            loads.clone(),
            metrics.clone(),
            settings.options.clone(),
            wake.clone(),
        );
        let watching = tokio::spawn(keep_table(
            client.clone(),
            settings.namespace.clone(),
            table_tx,
        ));
        let peers = crate::peers::follow(client.clone(), settings.peers.clone());
        let scaling = tokio::spawn(scale(
            client,
            table_rx,
            Load { own: loads, peers },
            metrics,
            wake,
            settings.scale_every,
        ));
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("listening on {}: {e}", settings.listen))?;
        tracing::info!(listen = %settings.listen, namespace = ?settings.namespace, "gateway serving");
        let served = axum::serve(listener, gateway.router())
            .with_graceful_shutdown(stop)
            .await;
        watching.abort();
        scaling.abort();
        served?;
        Ok(())
    }

    /// The address the HTTP front will listen on.
    pub fn listen(&self) -> SocketAddr {
        self.settings.listen
    }
}

/// Keeps the routing table of the watched Servers and their Services' EndpointSlices.
pub async fn keep_table(
    client: kube::Client,
    namespace: Option<String>,
    tx: watch::Sender<Arc<Table>>,
) {
    let (servers_api, slices_api): (Api<Server>, Api<EndpointSlice>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let (servers, servers_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    let server_events = reflector(
        servers_writer,
        watcher(servers_api, watcher::Config::default()),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()));
    // Only the slices of Servers' Services: they carry the Service's `server` label.
    let selector = format!("{},{SERVICE_NAME_LABEL}", Kind::Server.lower());
    let slice_events = reflector(
        slices_writer,
        watcher(slices_api, watcher::Config::default().labels(&selector)),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()));
    let mut events = std::pin::pin!(futures::stream::select(server_events, slice_events));
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching Servers and EndpointSlices (retrying)");
            continue;
        }
        let (servers, slices) = (servers.state(), slices.state());
        let table = Table::build(
            servers.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
        );
        tx.send_if_modified(|current| {
            if **current == table {
                false
            } else {
                *current = Arc::new(table);
                true
            }
        });
    }
}

/// The load a scaler sizes Servers for: this replica's and its peers'.
pub struct Load {
    pub own: Loads,
    pub peers: watch::Receiver<Vec<SocketAddr>>,
}

/// Every `every` (or at once when a request is held), sizes each autoscaled Server for its
/// load and writes `spec.replicas` where it differs.
pub async fn scale(
    client: kube::Client,
    table: watch::Receiver<Arc<Table>>,
    load: Load,
    metrics: Metrics,
    wake: Arc<Notify>,
    every: Duration,
) {
    let mut recommenders: HashMap<ServerKey, Recommender> = HashMap::new();
    // What this gateway last wrote, until the watched Server shows it.
    let mut written: HashMap<ServerKey, i32> = HashMap::new();
    let peer_client = Arc::new(PeerClient::default());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = wake.notified() => {}
        }
        let now = Instant::now();
        let snapshot = table.borrow().clone();
        let own = load.own.snapshot();
        let peers = load.peers.borrow().clone();
        let others = if peers.is_empty() {
            HashMap::new()
        } else {
            crate::peers::sum(
                &crate::peers::fetch(&peer_client, &peers, Duration::from_millis(400)).await,
            )
        };
        for route in snapshot.routes() {
            let labels = ServerLabels::from(&route.key);
            let (in_flight, held) = own.get(&route.key).copied().unwrap_or_default();
            let peer_load = others.get(&route.key).copied().unwrap_or(0);
            metrics
                .in_flight
                .get_or_create(&labels)
                .set(i64::from(in_flight));
            metrics.held.get_or_create(&labels).set(i64::from(held));
            let Some(autoscaling) = &route.autoscaling else {
                recommenders.remove(&route.key);
                continue;
            };
            let policy = Policy::from(autoscaling);
            let desired = recommenders
                .entry(route.key.clone())
                .or_insert_with(|| Recommender::new(now, route.replicas))
                .observe(now, in_flight + held + peer_load, &policy);
            metrics
                .desired_replicas
                .get_or_create(&labels)
                .set(i64::from(desired));
            if written.get(&route.key) == Some(&route.replicas) {
                written.remove(&route.key);
            }
            if desired == route.replicas || written.get(&route.key) == Some(&desired) {
                continue;
            }
            let api: Api<Server> = Api::namespaced(client.clone(), &route.key.namespace);
            let patch = json!({"spec": {"replicas": desired}});
            match api
                .patch_scale(
                    &route.key.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    let direction = if desired > route.replicas {
                        "up"
                    } else {
                        "down"
                    };
                    tracing::info!(server = %route.key, from = route.replicas, to = desired,
                        in_flight, held, peer_load, "scaling");
                    metrics
                        .scale
                        .get_or_create(&ScaleLabels {
                            namespace: route.key.namespace.clone(),
                            server: route.key.name.clone(),
                            direction,
                        })
                        .inc();
                    written.insert(route.key.clone(), desired);
                }
                Err(e) => {
                    tracing::warn!(server = %route.key, to = desired, error = %e,
                        "cannot write spec.replicas through the scale subresource");
                }
            }
        }
        recommenders.retain(|k, _| snapshot.route(k).is_some());
        written.retain(|k, _| snapshot.route(k).is_some());
    }
}
