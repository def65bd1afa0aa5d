//! Sampled specs the schema accepts, planned for every kind on the kind, GCP and AWS
//! backends: every child the planners ask for is accepted by the real API server
//! (`dryRun=All`: validated and admitted, never stored). A planner that writes a name,
//! label, volume or env var Kubernetes refuses fails here rather than in a user's cluster.
//! `PLANNED_SPECS` sets the number of sampled specs (default 120).

use std::sync::Arc;

use kube::api::{Api, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use substratus_clouds::gpu::GpuCatalog;
use substratus_core::cloud::{BucketUrl, Cloud, CloudConfig, PrefixFolder};
use substratus_core::names::Kind;
use substratus_core::plan::batch::{self, BatchInput, BatchSpec};
use substratus_core::plan::build::{self, BuildInput, BuildSettings};
use substratus_core::plan::notebook::{self, NotebookInput};
use substratus_core::plan::server::{self, AdapterInput, ServerInput};
use substratus_core::plan::{Child, Parent, RefState};
use substratus_crds::{ModelSpec, NotebookSpec, ServerSpec};
use substratus_tests::cluster::{TestNamespace, client};
use substratus_tests::operator::{kind_cloud, kind_cloud_inline};

fn gpu() -> impl Strategy<Value = Value> {
    let ty = prop_oneof![
        Just(Value::Null),
        Just(json!("nvidia-l4")),
        Just(json!("nvidia-a100")),
        Just(json!("nvidia-a100-80gb")),
        Just(json!("nvidia-t4")),
        Just(json!("nvidia-h100")),
        Just(json!("nvidia-a10g")),
    ];
    (ty, 1i64..=16).prop_map(|(t, n)| {
        let mut g = json!({"type": t, "count": n});
        g.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        g
    })
}

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        // Secret names Kubernetes accepts: one it refuses shows as ApplyFailed (faults.rs).
        "[a-z]([-a-z0-9]{0,10}[a-z0-9])?".prop_map(|s| format!("${{{{ secrets.{s}.token }}}}")),
        "[a-z]([-a-z0-9]{0,10}[a-z0-9])?".prop_map(|s| format!("${{{{ secrets.{s}.HF_TOKEN }}}}")),
    ]
}

fn build() -> impl Strategy<Value = Value> {
    let git = (
        "https://example\\.com/[a-z/]{1,20}",
        proptest::option::of("[a-z/._-]{0,20}"),
        proptest::option::of("[a-z][a-z0-9/._-]{0,30}"),
        proptest::option::of("v[0-9]\\.[0-9]{1,3}"),
    )
        .prop_map(|(url, path, branch, tag)| {
            let mut g = json!({"url": url, "path": path, "branch": branch, "tag": tag});
            g.as_object_mut().unwrap().retain(|_, v| !v.is_null());
            json!({"git": g})
        });
    let upload = ("[0-9a-f]{32}", "[a-z0-9-]{1,20}")
        .prop_map(|(m, r)| json!({"upload": {"md5Checksum": m, "requestID": r}}));
    prop_oneof![3 => Just(Value::Null), 1 => git, 1 => upload]
}

/// Specs the schema accepts, in the shapes users write.
fn spec() -> impl Strategy<Value = Value> {
    (
        "[a-z][a-z0-9./-]{0,30}(:[a-z0-9.]{1,10})?",
        build(),
        proptest::collection::vec("[ -~]{0,30}", 0..4),
        proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,15}", env_value(), 0..5),
        proptest::collection::btree_map(
            "[a-z_]{1,12}",
            prop_oneof![
                any::<i32>().prop_map(|i| json!(i)),
                "[ -~]{0,40}".prop_map(|s| json!(s))
            ],
            0..5,
        ),
        proptest::option::of((
            0i64..128,
            0i64..1024,
            0i64..2048,
            proptest::option::of(gpu()),
        )),
        (any::<bool>(), 0i32..5),
    )
        .prop_map(
            |(image, build, command, env, params, resources, (suspend, replicas))| {
                let resources = resources.map(|(cpu, memory, disk, gpu)| {
                    let mut r = json!({"cpu": cpu, "memory": memory, "disk": disk, "gpu": gpu});
                    r.as_object_mut().unwrap().retain(|_, v| !v.is_null());
                    r
                });
                let mut s = json!({
                    "image": if build.is_null() { json!(image) } else { Value::Null },
                    "build": build, "command": command, "env": env, "params": params,
                    "resources": resources, "suspend": suspend, "replicas": replicas,
                });
                s.as_object_mut().unwrap().retain(|_, v| !v.is_null());
                s
            },
        )
}

fn name() -> impl Strategy<Value = String> {
    "[a-z]([-a-z0-9]{0,44}[a-z0-9])?"
}

fn gcp() -> Arc<dyn Cloud> {
    Arc::new(
        substratus_clouds::gcp::GcpCloud::new(
            CloudConfig {
                cluster_name: "gke-1".into(),
                artifact_bucket: BucketUrl::parse("gs://proj-1-substratus-artifacts").unwrap(),
                registry: "us-central1-docker.pkg.dev/proj-1/substratus".into(),
                principal: Some("substratus@proj-1.iam.gserviceaccount.com".into()),
                tenancy: Default::default(),
            },
            substratus_clouds::gcp::GcpSettings {
                project: "proj-1".into(),
                storage_endpoint: "http://127.0.0.1:9".into(),
                signed_url_endpoint: None,
                iam_endpoint: "http://127.0.0.1:9".into(),
                iam_credentials_endpoint: "http://127.0.0.1:9".into(),
                metadata_endpoint: "http://127.0.0.1:9".into(),
                artifact_registry_endpoint: "http://127.0.0.1:9".into(),
                project_number: None,
            },
            GpuCatalog::gcp(),
        )
        .unwrap(),
    )
}

fn aws() -> Arc<dyn Cloud> {
    Arc::new(substratus_tests::operator::aws_cloud(
        "s3://123456789012-substratus-artifacts",
        "oidc.eks.us-west-2.amazonaws.com/id/ABC",
        Some("http://127.0.0.1:9".into()),
        Some("http://127.0.0.1:9".into()),
    ))
}

/// Creates `obj` with `dryRun=All`; the API server's refusal, if any.
async fn dry_run(c: &kube::Client, ns: &str, obj: &Value) -> Result<(), String> {
    let o: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    let types = o.types.clone().ok_or("no apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
    let plural = match gvk.kind.as_str() {
        "PersistentVolumeClaim" => "persistentvolumeclaims".to_owned(),
        "PersistentVolume" => "persistentvolumes".to_owned(),
        k => format!("{}s", k.to_lowercase()),
    };
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api: Api<DynamicObject> =
        if o.metadata.namespace.is_some() || gvk.kind != "PersistentVolume" {
            Api::namespaced_with(c.clone(), ns, &ar)
        } else {
            Api::all_with(c.clone(), &ar)
        };
    let pp = PostParams {
        dry_run: true,
        field_manager: Some("substratus-operator".into()),
    };
    api.create(&pp, &o)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Every child of every planner for `spec` as an object of each kind named `name`.
fn plans(name: &str, ns: &str, spec: &Value, cloud: &dyn Cloud) -> Vec<(Kind, Value)> {
    let settings = BuildSettings::default();
    let model_ref = RefState::Ready {
        artifacts: PrefixFolder {
            kind: Kind::Model,
            namespace: ns.into(),
            name: "base".into(),
            folder: "artifacts",
            url: BucketUrl::parse(&format!(
                "{}/0123abcd/artifacts",
                cloud.config().artifact_bucket
            ))
            .unwrap(),
        },
        generation: 3,
    };
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let parent = Parent {
            kind,
            name: name.into(),
            namespace: ns.into(),
            uid: "7f8b4b34-1d0e-4a57-9d25-4b5c4d2c1e01".into(),
            generation: Some(2),
        };
        let mut children: Vec<Child> = Vec::new();
        let build = match kind {
            Kind::Model | Kind::Dataset => {
                let s: ModelSpec = serde_json::from_value(spec.clone()).unwrap();
                let image = s.image.clone().or(Some("built:1".into()));
                let input = BatchInput {
                    parent: parent.clone(),
                    spec: BatchSpec {
                        image: image.as_deref(),
                        command: &s.command,
                        env: &s.env,
                        params: &s.params,
                        resources: s.resources.as_ref(),
                    },
                    conditions: &[],
                    artifacts_url: None,
                    base_model: (kind == Kind::Model).then(|| model_ref.clone()),
                    dataset: (kind == Kind::Model).then(|| model_ref.clone()),
                    job: None,
                    pods: &[],
                };
                let p = batch::plan(&input, cloud);
                children.extend(p.children);
                children.extend(p.create);
                s.build.map(|b| *b)
            }
            Kind::Server => {
                let mut spec = spec.clone();
                spec["model"] = json!({"name": "base"});
                // Adapters: one named as long as the schema allows, one as short (sampled
                // names start with a letter: never "0").
                let long: String = name.chars().take(40).collect();
                let adapter_names = [long.trim_end_matches('-').to_owned(), "0".to_owned()];
                spec["adapters"] = adapter_names
                    .iter()
                    .map(|a| json!({"name": a, "model": {"name": format!("{a}-tuned")}}))
                    .collect();
                let s: ServerSpec = serde_json::from_value(spec).unwrap();
                let adapters = adapter_names
                    .iter()
                    .map(|a| AdapterInput {
                        name: a.clone(),
                        model: format!("{a}-tuned"),
                        state: model_ref.clone(),
                        base: Some("base".into()),
                    })
                    .collect();
                let p = server::plan(
                    &ServerInput {
                        parent: parent.clone(),
                        spec: &s,
                        model: model_ref.clone(),
                        adapters,
                        deployment: None,
                        pods: &[],
                        copied: &[],
                    },
                    cloud,
                );
                children.extend(p.children);
                s.build.map(|b| *b)
            }
            Kind::Notebook => {
                let mut spec = spec.clone();
                spec["model"] = json!({"name": "base"});
                let mut s: NotebookSpec = serde_json::from_value(spec).unwrap();
                if s.image.is_none() {
                    s.image = Some("built:1".into());
                }
                let p = notebook::plan(
                    &NotebookInput {
                        parent: parent.clone(),
                        spec: &s,
                        artifacts_url: None,
                        model: Some(model_ref.clone()),
                        dataset: Some(model_ref.clone()),
                        new_token: "0123456789abcdef0123456789abcdef",
                        pod: None,
                        pods: &[],
                    },
                    cloud,
                );
                children.extend(p.children);
                children.extend(p.create);
                s.build.map(|b| *b)
            }
        };
        if let Some(b) = build {
            let p = build::plan(
                &BuildInput {
                    parent: &parent,
                    build: &b,
                    spec_image: None,
                    uploaded: true,
                    job: None,
                    pods: &[],
                    settings: &settings,
                },
                cloud,
            );
            children.extend(p.children);
            children.extend(p.create);
        }
        out.extend(children.iter().map(|c| (kind, c.to_value())));
    }
    out
}

#[tokio::test]
async fn every_child_planned_for_a_valid_spec_is_accepted_by_the_api_server() {
    let ns = TestNamespace::new("dryrun");
    let c = client().await;
    let n: u32 = std::env::var("PLANNED_SPECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..Config::default()
    });
    let strategy = (name(), spec());
    let mut samples = Vec::new();
    for _ in 0..n {
        let tree = strategy.new_tree(&mut runner).unwrap();
        samples.push(tree.current());
    }
    // A Pod is admitted only when its ServiceAccount exists (the operator ensures it first).
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(c.clone(), &ns.name);
    for role in substratus_core::names::Role::ALL {
        let sa =
            serde_json::from_value(json!({"metadata": {"name": role.service_account()}})).unwrap();
        accounts.create(&PostParams::default(), &sa).await.unwrap();
    }
    let clouds = [
        ("kind", kind_cloud("kind")),
        ("kind, inline volumes", kind_cloud_inline("kind")),
        ("gcp", gcp()),
        ("aws", aws()),
    ];
    let (mut objects, mut children, mut refused_by_schema) = (0, 0, 0);
    let mut failures = Vec::new();
    for (name, spec) in &samples {
        // The object itself, as a user would create it: the schema must accept the sample.
        for kind in Kind::ALL {
            let mut spec = spec.clone();
            if matches!(kind, Kind::Server | Kind::Notebook) {
                spec["model"] = json!({"name": "base"});
            }
            if kind != Kind::Server {
                spec.as_object_mut().unwrap().remove("replicas");
            }
            if kind != Kind::Notebook {
                spec.as_object_mut().unwrap().remove("suspend");
            }
            let obj = json!({"apiVersion": "substratus.ai/v1", "kind": kind.name(),
                "metadata": {"name": name, "namespace": ns.name}, "spec": spec});
            match dry_run(&c, &ns.name, &obj).await {
                Ok(()) => objects += 1,
                Err(e) => {
                    refused_by_schema += 1;
                    failures.push(format!(
                        "the schema refused a sampled {} {name}: {e}",
                        kind.name()
                    ));
                }
            }
        }
        for (cloud_name, cloud) in &clouds {
            for (kind, child) in plans(name, &ns.name, spec, cloud.as_ref()) {
                children += 1;
                if let Err(e) = dry_run(&c, &ns.name, &child).await {
                    failures.push(format!(
                        "{cloud_name}: {} {name}: {} {} refused: {e}\n{child:#}",
                        kind.name(),
                        child["kind"],
                        child["metadata"]["name"]
                    ));
                }
            }
        }
    }
    eprintln!(
        "{n} sampled specs: {objects} objects and {children} planned children sent with dryRun=All; {} refused",
        failures.len()
    );
    assert_eq!(refused_by_schema, 0, "{}", failures.join("\n"));
    assert!(
        children as u32 >= n * 12,
        "only {children} children planned"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
