//! `substratus-bench`: the operator's cost as its work grows, on the real control plane with
//! kwok GPU nodes, side by side with the floor — the same child objects and status writes made
//! by a plain client with no operator logic. Prints numbers; passes or fails on nothing.
//!
//! ```sh
//! cargo build --release -p substratus-operator -p substratus-bench
//! target/release/substratus-bench --models 100
//! ```
#![allow(
    unsafe_code,
    reason = "sysconf for the clock tick and setting the environment before any thread starts"
)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod original;

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use substratus_crds::{Dataset, Model, Server};
use substratus_devcluster::{Cluster, Options, Profile};
use substratus_tests::audit::{self, AuditEntry};
use substratus_tests::operator::OPERATOR_USER;

#[derive(Parser)]
#[command(
    name = "substratus-bench",
    about = "Benchmarks the operator against the floor on a simulated cluster"
)]
struct Args {
    /// Imported Models to create (Datasets and Servers are a tenth of that each).
    #[arg(long, default_value_t = 100)]
    models: usize,
    /// GPU nodes to simulate, spread over the GKE pools.
    #[arg(long, default_value_t = 1000)]
    gpu_nodes: usize,
    /// Seconds of steady state to observe after convergence.
    #[arg(long, default_value_t = 300)]
    steady_seconds: u64,
    /// The operator's RESYNC_SECONDS: every object is reconciled again within this period,
    /// so the steady-state window holds several resync rounds (default 600 in production).
    #[arg(long, default_value_t = 60)]
    resync_seconds: u64,
    /// The operator binary (build it with --release for representative numbers).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Requests at once: the floor's creates and status writes, and the operator's
    /// CONCURRENCY (reconciles at once per kind and lane), so that both sides react to a
    /// burst of finished Jobs with as many writes at once. `--memory-only` runs the operator
    /// with its default (8): every reconcile in flight holds its object and plan.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measure only the operator's memory and requests while it holds N Models and their
    /// children: no floor, and kube-controller-manager, the scheduler and kwok are stopped,
    /// so Jobs never run (Models stay JobNotComplete; Servers wait for them). Ends once
    /// every Model and Dataset has its Job, after the steady-state window.
    #[arg(long)]
    memory_only: bool,
    /// Keep the apiserver's audit log and the operator's log in this directory (the
    /// cluster's state is removed at the end otherwise).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// The operator's log filter (RUST_LOG), e.g. `kube_runtime=debug` to see each
    /// reconcile start.
    #[arg(long, default_value = "warn")]
    operator_log: String,
    /// How the kind backend mounts prefixes (S3_CSI_VOLUMES), for the operator and the
    /// floor alike: `inline` (substratus-csi-s3's inline volumes), `claims` (a static
    /// PersistentVolume and claim per prefix, which pods wait for the volume controller to
    /// bind) or `namespace` (one static volume and claim per namespace, mounted by subPath:
    /// the AWS backend's object set).
    #[arg(long, default_value = "inline")]
    volumes: substratus_clouds::kind::KindVolumes,
    /// Also run the original operator (v0.10.1, built by hack/build-original.sh) with the same
    /// workload on a cluster of the same recipe, and print it beside ours.
    #[arg(long)]
    against_original: bool,
    /// Skip the floor's half (at 10,000 objects with Jobs it takes most of an hour): only
    /// the operator is measured, and the floor's lines say so.
    #[arg(long, conflicts_with = "memory_only")]
    skip_floor: bool,
}

/// The kind backend's CSI driver for a way of mounting.
fn csi_driver(volumes: substratus_clouds::kind::KindVolumes) -> &'static str {
    match volumes {
        substratus_clouds::kind::KindVolumes::Inline => "s3.csi.substratus.ai",
        substratus_clouds::kind::KindVolumes::Claims
        | substratus_clouds::kind::KindVolumes::Namespace => "ru.yandex.s3.csi",
    }
}

/// How long a side may take to converge: an hour, or half a second per object (on 2 cores
/// the cluster itself takes about a quarter of a second per object with Jobs).
fn wait_for(objects: usize) -> Duration {
    Duration::from_secs(3600).max(Duration::from_millis(500) * objects as u32)
}
/// From all Ready to the start of steady state.
const SETTLE: Duration = Duration::from_secs(2);

fn operator_bin(args: &Args) -> PathBuf {
    args.operator_bin.clone().unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| substratus_tests::manifests::repo_root().join("target"));
        let release = target.join("release/substratus-operator");
        if release.exists() {
            release
        } else {
            target.join("debug/substratus-operator")
        }
    })
}

/// The objects of one run, in one namespace.
struct Workload {
    models: Vec<String>,
    datasets: Vec<String>,
    servers: Vec<(String, String)>,
}

impl Workload {
    fn new(n: usize) -> Workload {
        let tenth = (n / 10).max(1);
        Workload {
            models: (0..n).map(|i| format!("m{i}")).collect(),
            datasets: (0..tenth).map(|i| format!("d{i}")).collect(),
            servers: (0..tenth)
                .map(|i| (format!("s{i}"), format!("m{i}")))
                .collect(),
        }
    }

    fn total(&self) -> usize {
        self.models.len() + self.datasets.len() + self.servers.len()
    }
}

fn model(name: &str) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name},
           "spec": {"image": "substratusai/model-loader-huggingface", "params": {"name": "facebook/opt-125m"},
                    "resources": {"cpu": 1, "memory": 1, "disk": 1}}})
}
fn dataset(name: &str) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": "Dataset", "metadata": {"name": name},
           "spec": {"image": "substratusai/dataset-squad", "resources": {"cpu": 1, "memory": 1, "disk": 1}}})
}
fn server(name: &str, model: &str) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": "Server", "metadata": {"name": name},
           "spec": {"image": "substratusai/model-server-basaran", "model": {"name": model},
                    "resources": {"cpu": 1, "memory": 1, "disk": 1, "gpu": {"type": "nvidia-l4", "count": 1}}}})
}

async fn create_all<K>(api: &Api<K>, objs: Vec<Value>, concurrency: usize) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    stream::iter(objs)
        .map(|v| async move {
            let obj: K = serde_json::from_value(v)?;
            api.create(&PostParams::default(), &obj)
                .await
                .map(|_| ())
                .context("create")
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    Ok(())
}

async fn create_workload(
    client: &Client,
    ns: &str,
    w: &Workload,
    concurrency: usize,
) -> Result<()> {
    create_all(
        &Api::<Dataset>::namespaced(client.clone(), ns),
        w.datasets.iter().map(|n| dataset(n)).collect(),
        concurrency,
    )
    .await?;
    create_all(
        &Api::<Model>::namespaced(client.clone(), ns),
        w.models.iter().map(|n| model(n)).collect(),
        concurrency,
    )
    .await?;
    create_all(
        &Api::<Server>::namespaced(client.clone(), ns),
        w.servers.iter().map(|(n, m)| server(n, m)).collect(),
        concurrency,
    )
    .await?;
    Ok(())
}

/// Waits until every Model, Dataset and Server in `ns` is Ready, from one watch per kind:
/// polling lists of thousands of objects would load the API server (and this process) on
/// the operator's side only, which the floor, told by its own writes, never does.
async fn wait_all_ready(client: &Client, ns: &str, total: usize) -> Result<()> {
    fn readiness<K>(api: Api<K>, kind: &'static str, ready: fn(&K) -> bool) -> ReadyEvents
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        K: Send + 'static,
    {
        watcher(api, watcher::Config::default())
            .applied_objects()
            .map_ok(move |o| (format!("{kind}/{}", o.name_any()), ready(&o)))
            .boxed()
    }
    let events = stream::select_all([
        readiness(Api::<Model>::namespaced(client.clone(), ns), "Model", |m| {
            m.status.as_ref().is_some_and(|s| s.ready)
        }),
        readiness(
            Api::<Dataset>::namespaced(client.clone(), ns),
            "Dataset",
            |d| d.status.as_ref().is_some_and(|s| s.ready),
        ),
        readiness(
            Api::<Server>::namespaced(client.clone(), ns),
            "Server",
            |s| s.status.as_ref().is_some_and(|s| s.ready),
        ),
    ]);
    until_all_ready(events, total, ns).await
}

/// Follows `(object, ready)` events until `total` objects are ready at once.
async fn until_all_ready(
    mut events: impl futures::Stream<Item = Result<(String, bool), watcher::Error>> + Unpin,
    total: usize,
    ns: &str,
) -> Result<()> {
    let wait = wait_for(total);
    let deadline = Instant::now() + wait;
    let mut ready = std::collections::HashSet::new();
    while ready.len() < total {
        let next = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .with_context(|| format!("not all {total} objects Ready in {ns} within {wait:?}"))?;
        let Some(event) = next else {
            bail!("the watches of {ns} ended")
        };
        let (key, is_ready) = event?;
        if is_ready {
            ready.insert(key);
        } else {
            ready.remove(&key);
        }
    }
    Ok(())
}

type ReadyEvents = futures::stream::BoxStream<'static, Result<(String, bool), watcher::Error>>;

/// The kind backend as the operator under test is configured.
fn floor_cloud(
    volumes: substratus_clouds::kind::KindVolumes,
) -> Result<substratus_clouds::kind::KindCloud> {
    let config = substratus_core::cloud::CloudConfig {
        cluster_name: "kind".into(),
        artifact_bucket: substratus_core::cloud::BucketUrl::parse("s3://substratus-artifacts")
            .map_err(anyhow::Error::msg)?,
        registry: "registry.substratus.svc.cluster.local:5000".into(),
        principal: None,
        tenancy: Default::default(),
    };
    let settings = substratus_clouds::kind::KindSettings {
        endpoint: "http://127.0.0.1:9".into(),
        public_endpoint: None,
        region: "us-east-1".into(),
        access_key_id: "bench".into(),
        secret_access_key: "bench".into(),
        csi_driver: csi_driver(volumes).into(),
        csi_secret: ("kube-system".into(), "csi-s3-secret".into()),
        registry_mirror: None,
        volumes,
    };
    substratus_clouds::kind::KindCloud::new(
        config,
        settings,
        substratus_clouds::gpu::GpuCatalog::builtin("gcp").context("gcp catalogue")?,
    )
    .map_err(anyhow::Error::msg)
}

fn owner(kind: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": "substratus.ai/v1", "kind": kind, "name": name, "uid": uid, "controller": true}])
}

/// Name → uid of every object of a kind in `ns` (for owner references).
async fn uids<K>(client: &Client, ns: &str) -> Result<HashMap<String, String>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|o| (o.name_any(), o.uid().unwrap_or_default()))
        .collect())
}

/// The floor: the same children and status writes, by a plain client, no operator logic.
async fn floor(
    client: &Client,
    ns: &str,
    w: &Workload,
    concurrency: usize,
    volumes: substratus_clouds::kind::KindVolumes,
) -> Result<Duration> {
    let started = Instant::now();
    create_workload(client, ns, w, concurrency).await?;
    let models = uids::<Model>(client, ns).await?;
    let datasets = uids::<Dataset>(client, ns).await?;
    let servers = uids::<Server>(client, ns).await?;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    let mut children = Vec::new();
    // The same storage the operator's kind backend makes: the objects of each artifacts
    // prefix (with claims, a PersistentVolume and its claim), and the pod volume mounting it.
    let cloud = floor_cloud(volumes)?;
    let storage_of = |kind: substratus_core::names::Kind,
                      name: &str,
                      uid: &str,
                      access: substratus_core::cloud::Access,
                      mount: Value|
     -> Result<(Vec<substratus_core::plan::Child>, Value, Value)> {
        let parent = substratus_core::plan::Parent {
            kind,
            name: name.to_owned(),
            namespace: ns.to_owned(),
            uid: uid.to_owned(),
            generation: Some(1),
        };
        let prefix = substratus_core::plan::storage::artifact_prefix(&parent, &cloud);
        let objects =
            substratus_core::plan::storage::owned_prefix_objects(&parent, &prefix, &cloud);
        let volume =
            substratus_core::cloud::Cloud::bucket_volume(&cloud, &prefix.artifacts(), access)?;
        let mut mount = mount;
        if let Some(sub_path) = volume.sub_path {
            mount["subPath"] = json!(sub_path);
        }
        Ok((objects, serde_json::to_value(volume.volume)?, mount))
    };
    let raw = |o: substratus_core::plan::Child| match o {
        substratus_core::plan::Child::Raw(v) => Some((
            if v["kind"] == "PersistentVolume" {
                "pv"
            } else {
                "pvc"
            },
            v,
        )),
        _ => None,
    };
    // With a claim per namespace, its volume and claim come first, once.
    children.extend(
        substratus_core::plan::storage::namespace_objects(&cloud, ns)
            .into_iter()
            .filter_map(raw),
    );
    for (kind, lower, job_suffix, names) in [
        ("Model", "model", "modeller", &models),
        ("Dataset", "dataset", "data-loader", &datasets),
    ] {
        let k = if kind == "Model" {
            substratus_core::names::Kind::Model
        } else {
            substratus_core::names::Kind::Dataset
        };
        for (name, uid) in names.iter() {
            let (objects, mut volume, mount) = storage_of(
                k,
                name,
                uid,
                substratus_core::cloud::Access::ReadWrite,
                json!({"name": "artifacts", "mountPath": "/content/artifacts"}),
            )?;
            volume["name"] = json!("artifacts");
            children.extend(objects.into_iter().filter_map(raw));
            children.push(("cm", json!({"metadata": {"name": format!("{name}-{lower}-params"), "ownerReferences": owner(kind, name, uid)}, "data": {"params.json": "{}"}})));
            children.push(("job", json!({"metadata": {"name": format!("{name}-{job_suffix}"), "labels": {lower: name}, "ownerReferences": owner(kind, name, uid)},
                "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {lower: name, "role": "run"}}, "spec": {"restartPolicy": "Never",
                    "volumes": [volume],
                    "containers": [{"name": "main", "image": "img", "volumeMounts": [mount],
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"}}}]}}}})));
        }
    }
    for (name, uid) in servers.iter() {
        let model = w
            .servers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        let (mut model_volume, model_mount) = match models.get(&model) {
            Some(muid) => {
                let (_, volume, mount) = storage_of(
                    substratus_core::names::Kind::Model,
                    &model,
                    muid,
                    substratus_core::cloud::Access::ReadOnly,
                    json!({"name": "model", "mountPath": "/content/model", "readOnly": true}),
                )?;
                (volume, mount)
            }
            None => bail!("Server {name}'s Model {model} is missing"),
        };
        model_volume["name"] = json!("model");
        children.push(("cm", json!({"metadata": {"name": format!("{name}-server-params"), "ownerReferences": owner("Server", name, uid)}, "data": {"params.json": "{}"}})));
        children.push(("svc", json!({"metadata": {"name": format!("{name}-server"), "ownerReferences": owner("Server", name, uid)},
            "spec": {"selector": {"server": name}, "ports": [{"name": "http", "port": 8080}]}})));
        children.push(("deploy", json!({"metadata": {"name": format!("{name}-server"), "labels": {"server": name}, "ownerReferences": owner("Server", name, uid)},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"server": name}}, "template": {"metadata": {"labels": {"server": name, "role": "run"}},
                "spec": {"nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                    "volumes": [model_volume],
                    "containers": [{"name": "serve", "image": "img", "volumeMounts": [model_mount],
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}]}}}})));
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    stream::iter(children)
        .map(|(what, v)| {
            let (cms, jobs, deps, svcs) = (cms.clone(), jobs.clone(), deps.clone(), svcs.clone());
            let (pvs, pvcs) = (pvs.clone(), pvcs.clone());
            async move {
                let pp = PostParams::default();
                match what {
                    "pv" => pvs
                        .create(&pp, &serde_json::from_value(v)?)
                        .await
                        .map(|_| ()),
                    "pvc" => pvcs
                        .create(&pp, &serde_json::from_value(v)?)
                        .await
                        .map(|_| ()),
                    "cm" => cms
                        .create(&pp, &serde_json::from_value(v)?)
                        .await
                        .map(|_| ()),
                    "job" => jobs
                        .create(&pp, &serde_json::from_value(v)?)
                        .await
                        .map(|_| ()),
                    "svc" => svcs
                        .create(&pp, &serde_json::from_value(v)?)
                        .await
                        .map(|_| ()),
                    _ => deps
                        .create(&pp, &serde_json::from_value(v)?)
                        .await
                        .map(|_| ()),
                }
                .context("floor create")
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;

    // The first status of every object ("waiting for its Job/Deployment"), as the operator
    // writes it once the children exist.
    let firsts: Vec<(&str, String)> = models
        .keys()
        .map(|n| ("Model", n.clone()))
        .chain(datasets.keys().map(|n| ("Dataset", n.clone())))
        .chain(servers.keys().map(|n| ("Server", n.clone())))
        .collect();
    stream::iter(firsts)
        .map(|(kind, name)| {
            let client = client.clone();
            async move {
                let status = json!({"apiVersion": "substratus.ai/v1", "kind": kind, "status": {"ready": false}});
                let pp = PatchParams::apply("bench-floor").force();
                let patch = Patch::Apply(&status);
                match kind {
                    "Model" => Api::<Model>::namespaced(client, ns).patch_status(&name, &pp, &patch).await.map(|_| ()),
                    "Dataset" => Api::<Dataset>::namespaced(client, ns).patch_status(&name, &pp, &patch).await.map(|_| ()),
                    _ => Api::<Server>::namespaced(client, ns).patch_status(&name, &pp, &patch).await.map(|_| ()),
                }
                .context("floor status")
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;

    // Status writes as children finish, from one watch per child kind.
    let mut pending: BTreeMap<String, ()> = models
        .keys()
        .chain(datasets.keys())
        .chain(servers.keys())
        .map(|n| (n.clone(), ()))
        .collect();
    let job_events = watcher(jobs.clone(), watcher::Config::default())
        .applied_objects()
        .map(|r| r.map(either::Left));
    let dep_events = watcher(deps.clone(), watcher::Config::default())
        .applied_objects()
        .map(|r| r.map(either::Right));
    let mut events = stream::select(job_events, dep_events).boxed();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut writes = Vec::new();
    let deadline = Instant::now() + wait_for(pending.len());
    while !pending.is_empty() {
        let ev = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .context("floor timed out")?;
        let Some(ev) = ev else { bail!("watch ended") };
        let (kind, parent, done) = match ev? {
            either::Left(job) => {
                let complete = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1;
                let labels = job.labels();
                match (labels.get("model"), labels.get("dataset")) {
                    (Some(m), _) => ("Model", m.clone(), complete),
                    (_, Some(d)) => ("Dataset", d.clone(), complete),
                    _ => continue,
                }
            }
            either::Right(d) => {
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    >= 1;
                (
                    "Server",
                    d.labels().get("server").cloned().unwrap_or_default(),
                    ready,
                )
            }
        };
        if !done || pending.remove(&parent).is_none() {
            continue;
        }
        // Written apart from the watch loop, as many at once as the operator may: one
        // slow write must not hold back the next event.
        let (client, ns, permits) = (client.clone(), ns.to_owned(), permits.clone());
        writes.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let status =
                json!({"apiVersion": "substratus.ai/v1", "kind": kind, "status": {"ready": true}});
            let pp = PatchParams::apply("bench-floor").force();
            match kind {
                "Model" => Api::<Model>::namespaced(client, &ns)
                    .patch_status(&parent, &pp, &Patch::Apply(&status))
                    .await
                    .map(|_| ())?,
                "Dataset" => Api::<Dataset>::namespaced(client, &ns)
                    .patch_status(&parent, &pp, &Patch::Apply(&status))
                    .await
                    .map(|_| ())?,
                _ => Api::<Server>::namespaced(client, &ns)
                    .patch_status(&parent, &pp, &Patch::Apply(&status))
                    .await
                    .map(|_| ())?,
            }
            anyhow::Ok(())
        }));
    }
    for w in writes {
        w.await.context("floor status write")??;
    }
    Ok(started.elapsed())
}

/// Peak RSS (KiB) and CPU seconds of a process, from /proc.
fn process_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc_sysconf_clk_tck() };
    Some((hwm, ticks / hz))
}

unsafe extern "C" {
    fn sysconf(name: i32) -> i64;
}
unsafe fn libc_sysconf_clk_tck() -> f64 {
    const SC_CLK_TCK: i32 = 2;
    // SAFETY: sysconf(_SC_CLK_TCK) only reads a constant of the C library.
    let v = unsafe { sysconf(SC_CLK_TCK) };
    if v > 0 { v as f64 } else { 100.0 }
}

struct Operator {
    child: Child,
    metrics_port: u16,
}

impl Operator {
    /// Reconciles the operator has run, all kinds together, from its /metrics.
    async fn reconciles(&self) -> Result<u64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = reqwest::get(&url)
            .await
            .with_context(|| format!("reading {url}"))?
            .text()
            .await?;
        Ok(counter_sum(&text, "substratus_reconciles_total"))
    }
}

/// The sum of a counter over all its label sets, in Prometheus text.
fn counter_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
impl Drop for Operator {
    /// SIGTERM first, so that the operator stops as it would in a cluster (and a heap profile
    /// is written); SIGKILL after 30 s.
    fn drop(&mut self) {
        substratus_devcluster::terminate(&mut self.child, Duration::from_secs(30));
    }
}

fn start_operator(args: &Args, bin: &Path, ns: &str, log: &Path) -> Result<Operator> {
    let log = std::fs::File::create(log)?;
    let metrics_port = substratus_devcluster::ports::free_loopback_port()?;
    let mut cmd = Command::new(bin);
    if !args.memory_only {
        // Memory is measured with the operator's own default (8), as it runs in production.
        cmd.env("CONCURRENCY", args.concurrency.to_string());
    }
    let child = cmd
        .arg("run")
        .env(
            "KUBECONFIG",
            substratus_tests::operator::operator_kubeconfig(),
        )
        .env("CLOUD", "kind")
        .env("GPU_CATALOG", "gcp")
        .env("S3_ENDPOINT", "http://127.0.0.1:9")
        .env("S3_CSI_VOLUMES", args.volumes.as_str())
        .env("S3_CSI_DRIVER", csi_driver(args.volumes))
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("WATCH_NAMESPACE", ns)
        .env("METRICS_BIND_ADDRESS", format!("127.0.0.1:{metrics_port}"))
        .env("HEALTH_PROBE_BIND_ADDRESS", "127.0.0.1:0")
        .env("RESYNC_SECONDS", args.resync_seconds.to_string())
        .env("RUST_LOG", &args.operator_log)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Operator {
        child,
        metrics_port,
    })
}

fn in_namespace(entries: &[AuditEntry], ns: &str) -> Vec<AuditEntry> {
    entries
        .iter()
        .filter(|e| {
            e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns)
                || e.object_ref.as_ref().is_none_or(|o| o.namespace.is_none())
        })
        .cloned()
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// From a child's completion to its parent's status write: for every Model, the time between
/// the last status write of its Job by the Job controller (the one that completes it) and the
/// operator's first status write of the Model after it.
fn reaction_latencies(
    log: &Path,
    ns: &str,
    writer: Option<&str>,
    since: jiff::Timestamp,
) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut job_done: HashMap<String, jiff::Timestamp> = HashMap::new();
    let mut status_writes: HashMap<String, Vec<jiff::Timestamp>> = HashMap::new();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<AuditEntry>(line) else {
            continue;
        };
        let Some(o) = &e.object_ref else { continue };
        if o.namespace.as_deref() != Some(ns)
            || o.subresource.as_deref() != Some("status")
            || !e.is_write()
        {
            continue;
        }
        let Ok(t) = e.request_received_timestamp.parse::<jiff::Timestamp>() else {
            continue;
        };
        if t < since {
            continue;
        }
        let name = o.name.clone().unwrap_or_default();
        if o.resource == "jobs" && e.user.username.contains("job-controller") {
            if let Some(model) = name.strip_suffix("-modeller") {
                let last = job_done.entry(model.to_owned()).or_insert(t);
                if t > *last {
                    *last = t;
                }
            }
        } else if o.resource == "models" && writer.is_none_or(|w| e.user.username == w) {
            status_writes.entry(name).or_default().push(t);
        }
    }
    let mut out = Vec::new();
    for (model, done) in job_done {
        let mut writes = status_writes.remove(&model).unwrap_or_default();
        writes.sort();
        if let Some(t) = writes.into_iter().find(|t| *t >= done) {
            out.push(
                (t - done)
                    .total(jiff::Unit::Millisecond)
                    .unwrap_or(f64::NAN),
            );
        }
    }
    out
}

fn print_requests(title: &str, entries: &[AuditEntry]) {
    let counts = audit::count_by_verb_and_resource(entries);
    let total: usize = counts.values().sum();
    let writes = entries.iter().filter(|e| e.is_write()).count();
    println!("  {title}: {total} requests, {writes} writes");
    for (k, v) in counts {
        println!("    {v:>8}  {k}");
    }
}

async fn run(args: Args) -> Result<()> {
    let bin = operator_bin(&args);
    if !bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p substratus-operator",
            bin.display()
        );
    }
    let bins = substratus_devcluster::locate_binaries()?;
    let state = std::env::temp_dir().join(format!("substratus-bench-{}", std::process::id()));
    let scale = (args.gpu_nodes / 4).max(1); // the GKE profile has 4 GPU nodes per scale step
    println!(
        "starting the cluster: GKE profile x{scale} ({} GPU nodes)",
        scale * 4
    );
    // Built first: a build that fails should not cost a benchmark run.
    let original = if args.against_original {
        Some(original::Original::build()?)
    } else {
        None
    };
    let options = Options {
        bin_dir: bins,
        state_dir: state.clone(),
        profiles: vec![Profile::Gcp],
        scale,
        real_node: false,
        node_images: vec![],
    };
    let t = Instant::now();
    let cluster = Cluster::start(&options)?;
    println!("  ready in {:.1}s", t.elapsed().as_secs_f64());
    let mut cluster = cluster;
    // The test fixture attaches to this cluster (CRDs, the operator's identity and RBAC).
    // SAFETY: set before any other thread reads the environment.
    unsafe { std::env::set_var("SUBSTRATUS_TEST_KUBECONFIG", cluster.kubeconfig()) };
    let client = substratus_tests::cluster::client().await;
    let audit_log = cluster.audit_log();

    let w = Workload::new(args.models);
    println!(
        "workload: {} Models, {} Datasets, {} Servers ({} objects)",
        w.models.len(),
        w.datasets.len(),
        w.servers.len(),
        w.total()
    );

    if args.memory_only {
        for c in ["kwok", "kube-scheduler", "kube-controller-manager"] {
            cluster.stop_component(c)?;
        }
        let result = memory_only(&args, &bin, &state, &client, &audit_log, &w).await;
        drop(cluster);
        let _ = std::fs::remove_dir_all(&state);
        return result;
    }

    let floor_since = jiff::Timestamp::now();
    let floor_time = if args.skip_floor {
        println!("floor: skipped (--skip-floor)");
        None
    } else {
        create_namespace(&client, "bench-floor").await?;
        let t = floor(&client, "bench-floor", &w, args.concurrency, args.volumes).await?;
        println!(
            "floor (plain client, same children and status writes): {:.2}s",
            t.as_secs_f64()
        );
        Some(t)
    };

    create_namespace(&client, "bench-operator").await?;
    let op_log = state.join("operator.log");
    let operator = start_operator(&args, &bin, "bench-operator", &op_log)?;
    let pid = operator.child.id();
    let since = jiff::Timestamp::now();
    let started = Instant::now();
    create_workload(&client, "bench-operator", &w, args.concurrency).await?;
    wait_all_ready(&client, "bench-operator", w.total()).await?;
    let op_time = started.elapsed();
    // The last objects' Events follow their Ready status by a few milliseconds: they belong
    // to convergence, so steady state starts a moment later.
    tokio::time::sleep(SETTLE).await;
    let converged_at = jiff::Timestamp::now();
    let usage_converged = process_usage(pid);
    let reconciles_converged = operator.reconciles().await?;
    println!(
        "operator: all {} Ready in {:.2}s",
        w.total(),
        op_time.as_secs_f64()
    );

    println!("steady state: watching for {}s", args.steady_seconds);
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let usage = process_usage(pid);
    let steady_reconciles = operator.reconciles().await? - reconciles_converged;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mine = in_namespace(
        &audit::entries(&audit_log, OPERATOR_USER, since),
        "bench-operator",
    );
    let mut latencies =
        reaction_latencies(&audit_log, "bench-operator", Some(OPERATOR_USER), since);
    latencies.sort_by(|a, b| a.total_cmp(b));
    let ours = Measured::new(
        op_time,
        mine,
        converged_at,
        usage,
        usage_converged,
        latencies,
    );
    // The same measure for the floor: a plain client that patches a Model's status as soon
    // as its watch shows the Job complete.
    let mut floor_latencies = reaction_latencies(&audit_log, "bench-floor", None, floor_since);
    floor_latencies.sort_by(|a, b| a.total_cmp(b));

    println!();
    println!(
        "== {} Models, {} Datasets, {} Servers on {} GPU nodes ({} volumes) ==",
        w.models.len(),
        w.datasets.len(),
        w.servers.len(),
        scale * 4,
        args.volumes.as_str()
    );
    println!(
        "  (a) operator, until all Ready   {:>10.2} s",
        op_time.as_secs_f64()
    );
    match floor_time {
        Some(floor_time) => {
            println!(
                "  (b) floor, plain client         {:>10.2} s",
                floor_time.as_secs_f64()
            );
            println!(
                "  (c) ratio operator / floor      {:>10.3}   (goal <= 1.15)",
                op_time.as_secs_f64() / floor_time.as_secs_f64()
            );
        }
        None => println!("  (b), (c) floor: not run (--skip-floor)"),
    }
    println!("  (d) API requests of the operator:");
    print_requests("during convergence", &ours.convergence);
    print_requests(
        &format!(
            "during {}s of steady state (from {}s after all Ready)",
            args.steady_seconds,
            SETTLE.as_secs()
        ),
        &ours.steady,
    );
    print_resyncs(
        args.resync_seconds,
        steady_reconciles,
        w.total(),
        &ours.steady,
    );
    if let (Some(hwm), Some(cpu), Some(cpu_conv)) =
        (ours.peak_rss_kib, ours.cpu_total, ours.cpu_converged)
    {
        println!(
            "  (e) operator peak RSS            {:>10.1} MiB   (goal <= 40 MiB at 10,000)",
            hwm as f64 / 1024.0
        );
        println!(
            "      operator CPU until converged {:>10.2} s; total {:.2} s",
            cpu_conv, cpu
        );
    }
    println!(
        "  (f) Job complete -> Model status  p50 {:.1} ms, p99 {:.1} ms over {} Models   (goal p99 <= floor's)",
        percentile(&ours.latencies, 0.5),
        percentile(&ours.latencies, 0.99),
        ours.latencies.len()
    );
    if floor_time.is_some() {
        println!(
            "      the floor, same measure       p50 {:.1} ms, p99 {:.1} ms over {} Models",
            percentile(&floor_latencies, 0.5),
            percentile(&floor_latencies, 0.99),
            floor_latencies.len()
        );
    }
    drop(operator);
    drop(cluster);
    keep(&args, &audit_log, &op_log)?;
    if let Some(original) = original {
        let options = Options {
            state_dir: state.join("original"),
            ..options
        };
        let theirs = original::measure(
            &original,
            &options,
            &w,
            args.concurrency,
            Duration::from_secs(args.steady_seconds),
        )
        .await;
        let theirs = match theirs {
            Ok(m) => m,
            Err(e) => {
                let log = options.state_dir.join("original.log");
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(20).collect();
                let _ = std::fs::remove_dir_all(&state);
                return Err(e.context(format!(
                    "the original (its log, last lines first):\n{}",
                    tail.join("\n")
                )));
            }
        };
        println!();
        println!("  the original's API requests:");
        print_requests("during convergence", &theirs.convergence);
        print_requests(
            &format!("during {}s of steady state", args.steady_seconds),
            &theirs.steady,
        );
        side_by_side(floor_time, &floor_latencies, &ours, &theirs);
    }
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// One operator's numbers from one run.
struct Measured {
    time: Duration,
    convergence: Vec<AuditEntry>,
    steady: Vec<AuditEntry>,
    peak_rss_kib: Option<u64>,
    cpu_converged: Option<f64>,
    cpu_total: Option<f64>,
    /// Job complete -> Model status, sorted.
    latencies: Vec<f64>,
}

impl Measured {
    fn new(
        time: Duration,
        requests: Vec<AuditEntry>,
        converged_at: jiff::Timestamp,
        usage: Option<(u64, f64)>,
        usage_converged: Option<(u64, f64)>,
        latencies: Vec<f64>,
    ) -> Measured {
        let (convergence, steady) = requests.into_iter().partition(|e| {
            e.request_received_timestamp
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t < converged_at)
        });
        Measured {
            time,
            convergence,
            steady,
            peak_rss_kib: usage.map(|u| u.0),
            cpu_converged: usage_converged.map(|u| u.1),
            cpu_total: usage.map(|u| u.1),
            latencies,
        }
    }

    fn requests_and_writes(entries: &[AuditEntry]) -> String {
        let writes = entries.iter().filter(|e| e.is_write()).count();
        format!("{} / {writes}", entries.len())
    }
}

/// The floor, ours and the original's in one table.
fn side_by_side(
    floor: Option<Duration>,
    floor_latencies: &[f64],
    ours: &Measured,
    theirs: &Measured,
) {
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let mib = |m: &Measured| {
        m.peak_rss_kib
            .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    };
    let cpu = |m: &Measured| {
        m.cpu_converged
            .zip(m.cpu_total)
            .map_or("-".into(), |(c, t)| format!("{c:.2} / {t:.2} s"))
    };
    let tail = |l: &[f64]| {
        if l.is_empty() {
            return "-".to_owned();
        }
        format!("{:.1} / {:.1} ms", percentile(l, 0.5), percentile(l, 0.99))
    };
    let rows = [
        (
            "time to all Ready",
            floor.map_or("not run".into(), secs),
            secs(ours.time),
            secs(theirs.time),
        ),
        (
            "requests / writes to converge",
            "-".into(),
            Measured::requests_and_writes(&ours.convergence),
            Measured::requests_and_writes(&theirs.convergence),
        ),
        (
            "steady-state requests / writes",
            "-".into(),
            Measured::requests_and_writes(&ours.steady),
            Measured::requests_and_writes(&theirs.steady),
        ),
        ("peak RSS", "-".into(), mib(ours), mib(theirs)),
        ("CPU converged / total", "-".into(), cpu(ours), cpu(theirs)),
        (
            "Job -> status p50 / p99",
            tail(floor_latencies),
            tail(&ours.latencies),
            tail(&theirs.latencies),
        ),
    ];
    println!();
    println!("== side by side ==");
    println!(
        "  {:<32} {:>18} {:>18} {:>18}",
        "", "floor", "ours", "original"
    );
    for (name, f, o, t) in rows {
        println!("  {name:<32} {f:>18} {o:>18} {t:>18}");
    }
}

/// What the resyncs of the steady-state window cost: reconciles run (counted by the
/// operator) and writes, per object and per resync round.
fn print_resyncs(resync_seconds: u64, reconciles: u64, objects: usize, steady: &[AuditEntry]) {
    let writes = steady.iter().filter(|e| e.is_write()).count();
    let rounds = reconciles as f64 / objects.max(1) as f64;
    println!(
        "      reconciles in the window: {reconciles} ({rounds:.2} per object; RESYNC_SECONDS={resync_seconds})"
    );
    let per_resync = if reconciles == 0 {
        "n/a: no reconcile ran".to_owned()
    } else {
        format!("{:.3}", writes as f64 / reconciles as f64)
    };
    println!("      writes per object per resync: {per_resync} ({writes} writes; goal 0)");
}

/// Copies the audit log and the operator's log to `--keep`, if given.
fn keep(args: &Args, audit_log: &Path, op_log: &Path) -> Result<()> {
    let Some(dir) = &args.keep else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (from, name) in [(audit_log, "audit.log"), (op_log, "operator.log")] {
        std::fs::copy(from, dir.join(name))
            .with_context(|| format!("keeping {} in {}", from.display(), dir.display()))?;
    }
    println!(
        "kept the audit log and the operator's log in {}",
        dir.display()
    );
    Ok(())
}

/// Jobs (by name) in `ns`, read page by page as metadata.
async fn count_jobs(client: &Client, ns: &str) -> Result<usize> {
    let api: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), ns);
    let mut n = 0;
    let mut lp = ListParams::default().limit(1000);
    loop {
        let page = api.list_metadata(&lp).await?;
        n += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(n),
        }
    }
}

/// `--memory-only`: the operator holds the workload and its children; Jobs never run.
async fn memory_only(
    args: &Args,
    bin: &Path,
    state: &Path,
    client: &Client,
    audit_log: &Path,
    w: &Workload,
) -> Result<()> {
    let ns = "bench-operator";
    create_namespace(client, ns).await?;
    let operator = start_operator(args, bin, ns, &state.join("operator.log"))?;
    let pid = operator.child.id();
    let since = jiff::Timestamp::now();
    let started = Instant::now();
    create_workload(client, ns, w, args.concurrency).await?;
    println!(
        "  created {} objects in {:.1}s",
        w.total(),
        started.elapsed().as_secs_f64()
    );
    let want = w.models.len() + w.datasets.len();
    let wait = wait_for(w.total());
    let deadline = Instant::now() + wait;
    loop {
        let n = count_jobs(client, ns).await?;
        if n >= want {
            break;
        }
        if Instant::now() > deadline {
            bail!("the operator made {n} of {want} Jobs within {wait:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let done = started.elapsed();
    let done_at = jiff::Timestamp::now();
    let reconciles_done = operator.reconciles().await?;
    println!(
        "operator: a Job for each of {want} Models and Datasets in {:.2}s",
        done.as_secs_f64()
    );
    println!("steady state: watching for {}s", args.steady_seconds);
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let usage = process_usage(pid);
    let steady_reconciles = operator.reconciles().await? - reconciles_done;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mine = in_namespace(&audit::entries(audit_log, OPERATOR_USER, since), ns);
    let (work, steady): (Vec<_>, Vec<_>) = mine.into_iter().partition(|e| {
        e.request_received_timestamp
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| t < done_at)
    });
    println!();
    println!(
        "== memory only: {} Models, {} Datasets, {} Servers; Jobs not run ==",
        w.models.len(),
        w.datasets.len(),
        w.servers.len()
    );
    println!(
        "  operator, until every Job exists {:>10.2} s",
        done.as_secs_f64()
    );
    print_requests("  requests until then", &work);
    print_requests(&format!("  during {}s after", args.steady_seconds), &steady);
    print_resyncs(args.resync_seconds, steady_reconciles, w.total(), &steady);
    if let Some((hwm, cpu)) = usage {
        println!(
            "  (e) operator peak RSS            {:>10.1} MiB   (goal <= 40 MiB at 10,000)",
            hwm as f64 / 1024.0
        );
        println!("      operator CPU                 {:>10.2} s", cpu);
    }
    drop(operator);
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

#[cfg(test)]
mod tests {
    use super::counter_sum;

    #[test]
    fn a_counter_is_summed_over_its_labels_and_nothing_else() {
        let text = "\
# HELP substratus_reconciles Reconciles run, by kind.
# TYPE substratus_reconciles counter
substratus_reconciles_total{kind=\"Model\"} 1200
substratus_reconciles_total{kind=\"Server\"} 34
substratus_reconciles_total_extra{kind=\"Model\"} 99
substratus_reconcile_errors_total{kind=\"Model\",reason=\"x\"} 7
";
        assert_eq!(counter_sum(text, "substratus_reconciles_total"), 1234);
        assert_eq!(counter_sum(text, "substratus_reconcile_errors_total"), 7);
        assert_eq!(counter_sum("", "substratus_reconciles_total"), 0);
    }
}
