//! `--against-original`: the original operator (Go, v0.10.1, built from the Go module proxy
//! by `hack/build-original.sh`) given the same workload on a cluster of the same recipe.
//!
//! The original's CRDs have our group, version and kinds, so it runs on a cluster of its own,
//! started after ours is gone: its CRDs (from the module), its ClusterRole
//! (`config/rbac/role.yaml`) bound to a ServiceAccount the audit log tells apart, and its kind
//! mode (`CLOUD=kind`: artifacts on a hostPath, no claims). Its cloud interface (`sci-kind`)
//! is not started: the workload builds nothing and kind binds no identity, so the original
//! makes no call to it (its gRPC client connects lazily).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use substratus_crds::Kind;
use substratus_devcluster::{Cluster, Options, Profile};
use substratus_tests::audit;

use super::{Measured, Workload};

/// The namespace and ServiceAccount the original runs as.
const NAMESPACE: &str = "substratus-original";
const SERVICE_ACCOUNT: &str = "controller-manager";
pub const USER: &str = "system:serviceaccount:substratus-original:controller-manager";
const BENCH_NS: &str = "bench-original";

/// The original's binaries and CRDs, built (or found in the cache) by hack/build-original.sh.
pub struct Original {
    pub controller_manager: PathBuf,
    pub crds: PathBuf,
    pub rbac: PathBuf,
}

impl Original {
    pub fn build() -> Result<Original> {
        let script = substratus_tests::manifests::repo_root().join("hack/build-original.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!("{} failed", script.display());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let (Some(bin), Some(crds)) = (lines.next(), lines.next()) else {
            bail!("{} printed {text:?}, not two directories", script.display());
        };
        let crds = PathBuf::from(crds);
        let rbac = crds
            .parent()
            .and_then(Path::parent)
            .map(|config| config.join("rbac/role.yaml"))
            .context("the original's config directory")?;
        Ok(Original {
            controller_manager: Path::new(bin).join("controllermanager"),
            crds,
            rbac,
        })
    }
}

/// Runs kubectl on `kubeconfig`'s cluster and returns what it printed.
fn kubectl(bins: &Path, kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = substratus_devcluster::kubectl(bins, kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Its CRDs and RBAC, and a kubeconfig for its ServiceAccount.
fn install(original: &Original, bins: &Path, cluster: &Cluster, state: &Path) -> Result<PathBuf> {
    let admin = cluster.kubeconfig();
    let crds = original.crds.to_string_lossy().into_owned();
    kubectl(bins, admin, &["apply", "--server-side", "-f", &crds])?;
    kubectl(
        bins,
        admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/models.substratus.ai",
            "crd/datasets.substratus.ai",
            "crd/servers.substratus.ai",
        ],
    )?;
    let role = original.rbac.to_string_lossy().into_owned();
    kubectl(bins, admin, &["apply", "-f", &role])?;
    let objects = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "original-manager"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "manager-role"},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]},
    ]});
    let mut apply = substratus_devcluster::kubectl(bins, admin);
    apply.args(["apply", "-f", "-"]);
    substratus_devcluster::pipe_json(apply, &objects).context("the original's account")?;
    let token = kubectl(
        bins,
        admin,
        &[
            "create",
            "token",
            SERVICE_ACCOUNT,
            "-n",
            NAMESPACE,
            "--duration=6h",
        ],
    )?;
    let admin_config: serde_json::Value = serde_json::from_slice(&std::fs::read(admin)?)?;
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "bench", "cluster": admin_config["clusters"][0]["cluster"].clone()}],
        "users": [{"name": "original", "user": {"token": token.trim()}}],
        "contexts": [{"name": "original", "context": {"cluster": "bench", "user": "original"}}],
        "current-context": "original",
    });
    let path = state.join("original.kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&kc)?)?;
    Ok(path)
}

async fn admin_client(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The workload's objects, created as they are written (the original's CRDs prune what they
/// do not know).
async fn create_workload(client: &Client, w: &Workload, concurrency: usize) -> Result<()> {
    let batches = [
        (
            Kind::Dataset,
            w.datasets
                .iter()
                .map(|n| super::dataset(n))
                .collect::<Vec<_>>(),
        ),
        (
            Kind::Model,
            w.models.iter().map(|n| super::model(n)).collect(),
        ),
        (
            Kind::Server,
            w.servers.iter().map(|(n, m)| super::server(n, m)).collect(),
        ),
    ];
    for (kind, objects) in batches {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), BENCH_NS, &kind.api_resource());
        stream::iter(objects)
            .map(|v| {
                let api = api.clone();
                async move {
                    let obj: DynamicObject = serde_json::from_value(v)?;
                    api.create(&PostParams::default(), &obj)
                        .await
                        .map(drop)
                        .with_context(|| format!("creating a {} for the original", kind.name()))
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<_>>()
            .await?;
    }
    Ok(())
}

/// Waits until every object has `status.ready: true`, from one watch per kind.
async fn wait_all_ready(client: &Client, total: usize) -> Result<()> {
    let events = Kind::ALL[..3].iter().map(|kind| {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), BENCH_NS, &kind.api_resource());
        let kind = kind.name();
        watcher(api, watcher::Config::default())
            .applied_objects()
            .map_ok(move |o| {
                let ready = o.data["status"]["ready"].as_bool().unwrap_or(false);
                (format!("{kind}/{}", o.name_any()), ready)
            })
            .boxed()
    });
    super::until_all_ready(stream::select_all(events), total, BENCH_NS).await
}

/// Runs the original on a fresh cluster of `options`' recipe and measures it as ours is.
pub async fn measure(
    original: &Original,
    options: &Options,
    w: &Workload,
    concurrency: usize,
    steady: Duration,
) -> Result<Measured> {
    let t = Instant::now();
    let cluster = Cluster::start(&Options {
        bin_dir: options.bin_dir.clone(),
        state_dir: options.state_dir.clone(),
        profiles: vec![Profile::Gcp],
        scale: options.scale,
        real_node: false,
        node_images: vec![],
    })?;
    println!(
        "the original's cluster (same recipe) ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let result = measure_on(original, options, &cluster, w, concurrency, steady).await;
    drop(cluster);
    result
}

async fn measure_on(
    original: &Original,
    options: &Options,
    cluster: &Cluster,
    w: &Workload,
    concurrency: usize,
    steady: Duration,
) -> Result<Measured> {
    let bins = &options.bin_dir;
    let kubeconfig = install(original, bins, cluster, &options.state_dir)?;
    let client = admin_client(cluster.kubeconfig()).await?;
    kubectl(
        bins,
        cluster.kubeconfig(),
        &["create", "namespace", BENCH_NS],
    )?;
    let log = std::fs::File::create(options.state_dir.join("original.log"))?;
    let metrics_port = substratus_devcluster::ports::free_loopback_port()?;
    let sci_port = substratus_devcluster::ports::free_loopback_port()?;
    let mut child = Command::new(&original.controller_manager)
        .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
        .arg("--health-probe-bind-address=127.0.0.1:0")
        .arg(format!("--sci-address=127.0.0.1:{sci_port}"))
        .arg("--zap-log-level=error")
        .env("KUBECONFIG", &kubeconfig)
        .env("CLOUD", "kind")
        .env("CLUSTER_NAME", "kind")
        .env("PRINCIPAL", "none")
        .env("REGISTRY_PORT_5000_TCP_ADDR", "127.0.0.1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", original.controller_manager.display()))?;
    let result = async {
        let pid = child.id();
        let since = jiff::Timestamp::now();
        let started = Instant::now();
        create_workload(&client, w, concurrency).await?;
        wait_all_ready(&client, w.total()).await?;
        let time = started.elapsed();
        tokio::time::sleep(super::SETTLE).await;
        let converged_at = jiff::Timestamp::now();
        let usage_converged = super::process_usage(pid);
        println!(
            "the original: all {} Ready in {:.2}s",
            w.total(),
            time.as_secs_f64()
        );
        println!("steady state: watching for {}s", steady.as_secs());
        tokio::time::sleep(steady).await;
        let usage = super::process_usage(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let audit_log = cluster.audit_log();
        let mine = super::in_namespace(&audit::entries(&audit_log, USER, since), BENCH_NS);
        let mut latencies = super::reaction_latencies(&audit_log, BENCH_NS, Some(USER), since);
        latencies.sort_by(|a, b| a.total_cmp(b));
        Ok(Measured::new(
            time,
            mine,
            converged_at,
            usage,
            usage_converged,
            latencies,
        ))
    }
    .await;
    substratus_devcluster::terminate(&mut child, Duration::from_secs(10));
    result
}
