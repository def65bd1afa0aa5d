//! `substratus-operator`: runs the Substratus controllers, and prints the CRDs.

mod config;
mod gateway;
mod http;
mod leader;
mod unpack;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use futures::FutureExt;
use prometheus_client::registry::Registry;
use substratus_core::controllers::{self, ControllerOptions};
use substratus_core::metrics::Metrics;
use substratus_core::reconcile::Context;
use substratus_core::watch::Watches;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "substratus-operator",
    version,
    about = "Runs the Substratus controllers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers.
    Run(Box<config::RunArgs>),
    /// Run the OpenAI-compatible gateway: routes requests by `model` to Servers, holds them
    /// while a replica starts, scales autoscaled Servers with their load.
    Gateway(Box<gateway::GatewayArgs>),
    /// Print the CustomResourceDefinitions of substratus.ai/v1 as YAML.
    Crd {
        /// As the Helm chart ships them: kept when the release is uninstalled.
        #[arg(long)]
        helm: bool,
    },
    /// Print the API reference (Markdown) generated from the CRD schemas: `docs/api.md`.
    ApiReference,
    /// Check and unpack an uploaded build context (the first step of a build Job).
    UnpackContext {
        /// The gzipped tar, as uploaded.
        #[arg(long)]
        archive: std::path::PathBuf,
        /// The md5 the object declares (spec.build.upload.md5Checksum).
        #[arg(long)]
        md5: String,
        /// The builder's workspace.
        #[arg(long)]
        into: std::path::PathBuf,
    },
}

/// With `--features dhat-heap`, every allocation is counted and `dhat-heap.json` is written
/// on a clean exit (SIGTERM): the heap at its peak, by allocation site.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    match Cli::parse().command {
        Command::Crd { helm } => {
            let yaml = if helm {
                substratus_crds::crds_yaml_for_helm()?
            } else {
                substratus_crds::crds_yaml()?
            };
            print!("{yaml}");
            Ok(())
        }
        Command::ApiReference => {
            print!("{}", substratus_crds::api_reference());
            Ok(())
        }
        Command::UnpackContext { archive, md5, into } => {
            match unpack::unpack_context(&archive, &md5, &into) {
                Ok(n) => {
                    println!(
                        "{n} entries of {} unpacked into {}",
                        archive.display(),
                        into.display()
                    );
                    Ok(())
                }
                Err(e) => {
                    // The pod's termination message: the build's condition quotes it.
                    let _ = std::fs::write("/dev/termination-log", e.to_string());
                    Err(e.into())
                }
            }
        }
        Command::Gateway(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(gateway::run(*args)),
        Command::Run(args) => runtime(args.worker_threads)
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(run(*args)),
    }
}

/// The runtime for `threads` worker threads (see `RunArgs::worker_threads`).
fn runtime(threads: u16) -> tokio::runtime::Builder {
    match threads {
        0 => tokio::runtime::Builder::new_multi_thread(),
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.into());
            b
        }
    }
}

pub(crate) fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub(crate) async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run(args: config::RunArgs) -> Result<()> {
    init_logging(&args.log_format);
    // One crypto provider in the whole graph (aws-lc-rs); installed explicitly all the same.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let cloud = args.cloud().await?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let process = http::ProcessMetrics::new(&mut registry, env!("CARGO_PKG_VERSION"));
    let ready = Arc::new(AtomicBool::new(false));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
        .boxed()
        .shared()
    };
    tokio::spawn(http::serve_metrics(
        args.metrics_bind_address,
        Arc::new(registry),
        process.clone(),
        stopped.clone(),
    ));
    tokio::spawn(http::serve_health(
        args.health_probe_bind_address,
        ready.clone(),
        stopped.clone(),
    ));
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            termination().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        }
    });

    // Ready once the API client and the cloud backend are set up, leader or not: a standby
    // replica is ready to take over, and `helm install --wait` or a rolling update must not
    // wait for a Lease only one replica can hold.
    ready.store(true, Ordering::SeqCst);

    // With leader election, reconcile only while holding the Lease; losing it stops the
    // process so that two replicas never both write.
    let mut leader_lost = None;
    if args.leader_elect {
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("substratus-operator-{}", std::process::id()));
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
                .with_namespace(&namespace)
                .with_identity(&identity)
                .with_duration(args.lease_duration_seconds)
                .with_grace(args.lease_duration_seconds.div_ceil(3).max(1))
                .build()
                .await
                .context("setting up leader election")?;
        let (mut is_leader, task) = manager.watch().await;
        tracing::info!(%identity, lease = %args.lease_name, %namespace, "waiting for leadership");
        let mut stop = stop_rx.clone();
        tokio::select! {
            r = is_leader.wait_for(|l| *l) => { r.context("leader election ended")?; }
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        tracing::info!(%identity, "became leader");
        process.leader.set(1);
        let term = leader::lapse(
            kube::Api::namespaced(client.clone(), &namespace),
            args.lease_name.clone(),
            identity,
            Duration::from_millis(args.lease_duration_seconds * 100)
                .max(Duration::from_millis(500)),
            Duration::from_millis(args.lease_duration_seconds * 200),
        );
        leader_lost = Some((is_leader, task, term));
    }

    if !args.leader_elect {
        // The only replica leads.
        process.leader.set(1);
    }
    let watches = Watches::new(&client, args.watch_namespace.as_deref());
    let caches = watches.caches().clone();
    let ctx =
        Arc::new(Context::new(client, cloud, metrics, caches).with_build(args.build_settings()));
    tracing::info!(cloud = ctx.cloud.name(), cluster = %ctx.cloud.config().cluster_name, "controllers starting");
    let opts = ControllerOptions {
        concurrency: args.concurrency,
        namespace: args.watch_namespace.clone(),
        resync_every: std::time::Duration::from_secs(args.resync_seconds),
        ..Default::default()
    };
    let controllers = controllers::run(ctx, watches, opts, stopped.clone());

    match leader_lost {
        None => controllers.await,
        Some((mut is_leader, _task, term)) => {
            tokio::select! {
                _ = controllers => {},
                _ = is_leader.wait_for(|l| !*l) => {
                    let _ = stop_tx.send(true);
                    anyhow::bail!("lost the leader Lease; exiting so that only the new leader writes");
                }
                lapse = term => {
                    let _ = stop_tx.send(true);
                    anyhow::bail!(
                        "leadership ended ({lapse:?}): the Lease was not renewed in time; exiting before another replica may take it, so that only one writes"
                    );
                }
            }
        }
    }
    // Let in-flight HTTP answers finish.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::runtime;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_thread_runs_everything_on_one_thread() {
        let flavor = |n| runtime(n).build().unwrap().handle().runtime_flavor();
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(0), RuntimeFlavor::MultiThread);
        let three = runtime(3).build().unwrap();
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
    }
}
