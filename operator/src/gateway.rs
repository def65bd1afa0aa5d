//! `substratus-operator gateway`: the OpenAI-compatible gateway in front of every Server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::FutureExt;
use prometheus_client::registry::Registry;
use substratus_gateway::peers::PeerSource;
use substratus_gateway::run::Settings;

use crate::http;

#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// Address of the OpenAI-compatible API.
    #[arg(long, env = "GATEWAY_BIND_ADDRESS", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Address of /metrics.
    #[arg(long, env = "METRICS_BIND_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_bind_address: SocketAddr,
    /// Address of /healthz and /readyz.
    #[arg(
        long,
        env = "HEALTH_PROBE_BIND_ADDRESS",
        default_value = "0.0.0.0:8081"
    )]
    pub health_probe_bind_address: SocketAddr,
    /// Route only this namespace's Servers (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Longest a request waits for a ready replica (a Server scaling from zero, a GPU node
    /// being provisioned) before 503.
    #[arg(long, env = "HOLD_TIMEOUT_SECONDS", default_value_t = 300)]
    pub hold_timeout_seconds: u64,
    /// Most requests held per Server; more are answered 503 at once.
    #[arg(long, env = "MAX_HELD_REQUESTS", default_value_t = 1000)]
    pub max_held_requests: u32,
    /// Replicas tried per request when one fails before answering.
    #[arg(long, env = "ATTEMPTS", default_value_t = 3)]
    pub attempts: usize,
    /// Milliseconds between two looks of the scaler at the load.
    #[arg(long, env = "SCALE_INTERVAL_MS", default_value_t = 1000)]
    pub scale_interval_ms: u64,
    /// The gateway's own Service: its other ready endpoints are peers whose loads count too
    /// (several replicas of the gateway agree on load). POD_NAMESPACE and POD_IP place it.
    #[arg(long, env = "PEERS_SERVICE")]
    pub peers_service: Option<String>,
    /// Fixed peers' addresses (host:port of their API), instead of a Service.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

pub async fn run(args: GatewayArgs) -> Result<()> {
    crate::init_logging(&args.log_format);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let process = http::ProcessMetrics::new(&mut registry, env!("CARGO_PKG_VERSION"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
        .boxed()
        .shared()
    };
    tokio::spawn(async move {
        crate::termination().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let peers = match (&args.peers_service, args.peers.is_empty()) {
        (Some(name), _) => PeerSource::Service {
            namespace: std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into()),
            name: name.clone(),
            own: std::env::var("POD_IP").ok().and_then(|ip| ip.parse().ok()),
        },
        (None, false) => PeerSource::Fixed(args.peers.clone()),
        (None, true) => PeerSource::None,
    };
    let settings = Settings {
        peers,
        listen: args.listen,
        namespace: args.watch_namespace.clone(),
        scale_every: Duration::from_millis(args.scale_interval_ms.max(50)),
        options: substratus_gateway::Options {
            hold_timeout: Duration::from_secs(args.hold_timeout_seconds),
            max_held: args.max_held_requests,
            attempts: args.attempts.max(1),
            ..Default::default()
        },
    };
    let gateway = substratus_gateway::run::prepare(client, settings, &mut registry);
    tokio::spawn(http::serve_metrics(
        args.metrics_bind_address,
        Arc::new(registry),
        process,
        stopped.clone(),
    ));
    let stopped_for_gateway = stopped.clone();
    tokio::spawn(http::serve_health(
        args.health_probe_bind_address,
        Arc::new(AtomicBool::new(true)),
        stopped,
    ));
    gateway.serve(stopped_for_gateway).await
}
