//! The controllers on the real control plane: the seed's example on the GKE profile, the
//! facebook-opt-125m chain on kind, failures and recovery, GPU types a cloud lacks, restarts
//! without duplicates, and a no-op reconcile that writes nothing.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use substratus_crds::{Model, Notebook};
use substratus_tests::audit;
use substratus_tests::cluster::{TestNamespace, client, wait_for};
use substratus_tests::manifests::{documents, repo_root};
use substratus_tests::objects::{WAIT, create, wait_ready, wait_reason};
use substratus_tests::operator::{OPERATOR_USER, RunningOperator, audit_log, kind_cloud};

async fn create_example(c: &kube::Client, ns: &str, rel: &str) {
    for doc in documents(&repo_root().join("examples").join(rel)).unwrap() {
        create(c, ns, doc).await;
    }
}

fn model(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name}, "spec": spec})
}

fn dataset(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": "Dataset", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn the_falcon_40b_example_becomes_ready_with_its_server_on_the_gke_l4_pool() {
    let ns = TestNamespace::new("falcon");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("gcp")).await;
    let started = Instant::now();
    create_example(&c, &ns.name, "falcon-40b/model.yaml").await;
    create_example(&c, &ns.name, "falcon-40b/server.yaml").await;
    wait_ready(&c, &ns.name, "Model", "falcon-40b").await;
    let model_ready = started.elapsed();
    wait_ready(&c, &ns.name, "Server", "falcon-40b").await;
    eprintln!(
        "falcon-40b: Model Ready after {model_ready:?}, Server Ready after {:?}",
        started.elapsed()
    );

    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let server_pods = pods
        .list(&ListParams::default().labels("server=falcon-40b,role=run"))
        .await
        .unwrap()
        .items;
    assert_eq!(server_pods.len(), 1);
    let pod = &server_pods[0];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].name, "serve");
    let gpus = &spec.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap()["nvidia.com/gpu"];
    assert_eq!(gpus.0, "4");
    let node = Api::<Node>::all(c.clone())
        .get(spec.node_name.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(
        node.metadata.labels.unwrap()["cloud.google.com/gke-accelerator"],
        "nvidia-l4"
    );
    let model = Api::<Model>::namespaced(c.clone(), &ns.name)
        .get("falcon-40b")
        .await
        .unwrap();
    let status = model.status.unwrap();
    assert!(
        status
            .artifacts
            .unwrap()
            .url
            .unwrap()
            .starts_with("s3://substratus-artifacts/")
    );
    assert_eq!(status.observed_generation, model.metadata.generation);
    op.stop().await;
}

#[tokio::test]
async fn the_facebook_opt_125m_chain_runs_in_order_on_kind() {
    let ns = TestNamespace::new("chain");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;

    // The fine-tuned Model first: it waits for what it references.
    create_example(&c, &ns.name, "facebook-opt-125m/finetuned-model.yaml").await;
    wait_reason(
        &c,
        &ns.name,
        "Model",
        "fb-opt-125m-squad",
        "BaseModelNotFound",
    )
    .await;
    // Slow loaders, so the waiting is visible.
    let mut base = documents(&repo_root().join("examples/facebook-opt-125m/base-model.yaml"))
        .unwrap()
        .remove(0);
    base["spec"]["env"] = json!({"SIM_DURATION": "4s"});
    create(&c, &ns.name, base).await;
    wait_reason(
        &c,
        &ns.name,
        "Model",
        "fb-opt-125m-squad",
        "BaseModelNotReady",
    )
    .await;
    create_example(&c, &ns.name, "facebook-opt-125m/dataset.yaml").await;
    create_example(&c, &ns.name, "facebook-opt-125m/server.yaml").await;
    create_example(&c, &ns.name, "facebook-opt-125m/notebook.yaml").await;
    wait_ready(&c, &ns.name, "Model", "fb-opt-125m-squad").await;
    wait_ready(&c, &ns.name, "Server", "fb-opt-125m-squad").await;
    wait_ready(&c, &ns.name, "Notebook", "fb-opt-125m-squad").await;

    // The fine-tuning Job started only after both references were Ready.
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let started = |j: &Job| j.metadata.creation_timestamp.clone().unwrap().0;
    let finished = |j: &Job| j.status.clone().unwrap().completion_time.unwrap().0;
    let tune = jobs.get("fb-opt-125m-squad-modeller").await.unwrap();
    let base = jobs.get("facebook-opt-125m-modeller").await.unwrap();
    let data = jobs.get("squad-data-loader").await.unwrap();
    assert!(started(&tune) >= finished(&base) && started(&tune) >= finished(&data));
    let pod = tune.spec.unwrap().template;
    let labels = pod.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(
        (labels["model"].as_str(), labels["role"].as_str()),
        ("fb-opt-125m-squad", "run")
    );
    let mounts: Vec<(String, bool)> = pod.spec.unwrap().containers[0]
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| (m.mount_path, m.read_only.unwrap_or(false)))
        .collect();
    for expected in [
        ("/content/params.json", true),
        ("/content/artifacts", false),
        ("/content/data", true),
        ("/content/model", true),
    ] {
        assert!(
            mounts.contains(&(expected.0.to_owned(), expected.1)),
            "{expected:?} not in {mounts:?}"
        );
    }
    let params = Api::<ConfigMap>::namespaced(c.clone(), &ns.name)
        .get("fb-opt-125m-squad-model-params")
        .await
        .unwrap();
    let json: Value = serde_json::from_str(&params.data.unwrap()["params.json"]).unwrap();
    assert_eq!(json, json!({"epochs": 1}));
    assert_eq!(params.metadata.owner_references.unwrap()[0].kind, "Model");

    // Notebook: token in a Secret named by status, never in status itself.
    let nbs: Api<Notebook> = Api::namespaced(c.clone(), &ns.name);
    let nb = nbs.get("fb-opt-125m-squad").await.unwrap();
    let status = nb.status.unwrap();
    let secret_name = status.token_secret.clone().unwrap();
    let secret = Api::<Secret>::namespaced(c.clone(), &ns.name)
        .get(&secret_name)
        .await
        .unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    assert_eq!(token.len(), 32);
    assert!(!serde_json::to_string(&status).unwrap().contains(&token));

    // Suspend deletes the Pod; resume brings a new one.
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let first_uid = pods
        .get("fb-opt-125m-squad-notebook")
        .await
        .unwrap()
        .metadata
        .uid;
    nbs.patch(
        "fb-opt-125m-squad",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    wait_reason(&c, &ns.name, "Notebook", "fb-opt-125m-squad", "Suspended").await;
    wait_for("the notebook Pod to be gone", WAIT, || async {
        Ok(pods
            .get_opt("fb-opt-125m-squad-notebook")
            .await
            .map_err(|e| e.to_string())?
            .is_none()
            .then_some(()))
    })
    .await;
    nbs.patch(
        "fb-opt-125m-squad",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    wait_ready(&c, &ns.name, "Notebook", "fb-opt-125m-squad").await;
    let second_uid = pods
        .get("fb-opt-125m-squad-notebook")
        .await
        .unwrap()
        .metadata
        .uid;
    assert_ne!(first_uid, second_uid);
    // The token survives suspend and resume.
    let again = Api::<Secret>::namespaced(c.clone(), &ns.name)
        .get(&secret_name)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(again.data.unwrap()["token"].0.clone()).unwrap(),
        token
    );
    op.stop().await;
}

#[tokio::test]
async fn a_failing_loader_shows_job_failed_and_recovers_after_the_spec_is_fixed() {
    let ns = TestNamespace::new("failing");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    create(
        &c,
        &ns.name,
        model(
            "broken",
            json!({"image": "loader", "env": {"SIM_FAIL": "true"}}),
        ),
    )
    .await;
    let msg = wait_reason(&c, &ns.name, "Model", "broken", "JobFailed").await;
    assert!(msg.contains("broken-modeller"), "{msg}");
    assert!(
        msg.contains("simulated failure"),
        "the pod's failure message is shown: {msg}"
    );
    let models: Api<Model> = Api::namespaced(c.clone(), &ns.name);
    let m = models.get("broken").await.unwrap();
    let complete = m
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(
        (complete.status.as_str(), complete.reason.as_str()),
        ("False", "JobFailed")
    );
    // The transition is also an Event on the Model, for `kubectl describe`.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), &ns.name);
    wait_for("a JobFailed warning Event on the Model", WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("JobFailed")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
        }))
    })
    .await;

    models
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"env": {"SIM_FAIL": "false"}}})),
        )
        .await
        .unwrap();
    wait_ready(&c, &ns.name, "Model", "broken").await;
    let job = Api::<Job>::namespaced(c.clone(), &ns.name)
        .get("broken-modeller")
        .await
        .unwrap();
    assert_eq!(
        job.metadata.annotations.unwrap()["substratus.ai/generation"],
        "2"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_gpu_type_the_cloud_lacks_is_a_readable_condition() {
    let ns = TestNamespace::new("nogpu");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("azure")).await;
    create(
        &c,
        &ns.name,
        model(
            "l4-on-azure",
            json!({"image": "loader", "resources": {"gpu": {"type": "nvidia-l4", "count": 1}}}),
        ),
    )
    .await;
    let msg = wait_reason(&c, &ns.name, "Model", "l4-on-azure", "GPUTypeUnavailable").await;
    assert!(msg.contains("nvidia-l4") && msg.contains("azure"), "{msg}");
    let jobs = Api::<Job>::namespaced(c.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "no Job for a GPU the cloud lacks");

    // The same on a type Azure has lands on its pool, with the sku taint tolerated.
    create(
        &c,
        &ns.name,
        model(
            "t4-on-azure",
            json!({"image": "loader", "resources": {"gpu": {"type": "nvidia-t4", "count": 1}}}),
        ),
    )
    .await;
    wait_ready(&c, &ns.name, "Model", "t4-on-azure").await;
    op.stop().await;
}

/// No timer looks at a waiting Model again (the resync is every 10 minutes): the pod's own
/// change, routed by its `model` label, is what brings the scheduler's verdict into status.
#[tokio::test]
async fn a_pod_that_cannot_be_scheduled_explains_its_model() {
    let ns = TestNamespace::new("unsched");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("gcp")).await;
    create(
        &c,
        &ns.name,
        model(
            "too-big",
            json!({"image": "loader", "resources": {"cpu": 512, "memory": 1, "disk": 1}}),
        ),
    )
    .await;
    let msg = wait_reason(&c, &ns.name, "Model", "too-big", "Unschedulable").await;
    assert!(msg.contains("Insufficient cpu"), "{msg}");
    op.stop().await;
}

#[tokio::test]
async fn killing_the_operator_mid_job_creates_no_duplicate_job() {
    let ns = TestNamespace::new("restart");
    let c = client().await;
    let since = jiff::Timestamp::now();
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    create(
        &c,
        &ns.name,
        model(
            "slow",
            json!({"image": "loader", "env": {"SIM_DURATION": "6s"}}),
        ),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let uid = wait_for("the Job to exist", WAIT, || async {
        Ok(jobs
            .get_opt("slow-modeller")
            .await
            .map_err(|e| e.to_string())?
            .and_then(|j| j.metadata.uid))
    })
    .await;
    op.kill();
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    wait_ready(&c, &ns.name, "Model", "slow").await;
    assert_eq!(
        jobs.get("slow-modeller").await.unwrap().metadata.uid,
        Some(uid),
        "the Job was replaced"
    );
    let creates: Vec<_> = audit::entries(&audit_log(), OPERATOR_USER, since)
        .into_iter()
        .filter(|e| {
            e.verb == "create"
                && e.resource() == "jobs"
                && e.object_ref.as_ref().and_then(|o| o.namespace.as_deref())
                    == Some(ns.name.as_str())
        })
        .collect();
    assert_eq!(creates.len(), 1, "Jobs created: {creates:?}");
    op.stop().await;
}

#[tokio::test]
async fn a_reconcile_of_unchanged_objects_writes_nothing() {
    let ns = TestNamespace::new("quiet");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("gcp")).await;
    create(&c, &ns.name, dataset("data", json!({"image": "loader"}))).await;
    create(
        &c,
        &ns.name,
        model("base", json!({"image": "loader", "params": {"name": "x"}})),
    )
    .await;
    create(&c, &ns.name, model("tuned", json!({"image": "trainer", "model": {"name": "base"}, "dataset": {"name": "data"}, "env": {"B": "1", "A": "${{ secrets.ai.TOKEN }}"}}))).await;
    create(
        &c,
        &ns.name,
        json!({"apiVersion": "substratus.ai/v1", "kind": "Server", "metadata": {"name": "srv"},
               "spec": {"image": "server", "model": {"name": "tuned"}, "resources": {"gpu": {"type": "nvidia-l4", "count": 1}}}}),
    )
    .await;
    create(
        &c,
        &ns.name,
        json!({"apiVersion": "substratus.ai/v1", "kind": "Notebook", "metadata": {"name": "nb"},
               "spec": {"image": "nb", "model": {"name": "tuned"}, "dataset": {"name": "data"}}}),
    )
    .await;
    for (kind, name) in [
        ("Dataset", "data"),
        ("Model", "base"),
        ("Model", "tuned"),
        ("Server", "srv"),
        ("Notebook", "nb"),
    ] {
        wait_ready(&c, &ns.name, kind, name).await;
    }
    op.stop().await;

    // A fresh operator reconciles every object from scratch; nothing has changed.
    let since = jiff::Timestamp::now();
    let op = RunningOperator::start(&ns.name, kind_cloud("gcp")).await;
    let reconciled = |kind: &str| {
        op.metrics
            .reconciles
            .get_or_create(&substratus_core::metrics::ResultLabels {
                kind: kind.into(),
                result: "ok".into(),
            })
            .get()
    };
    let counts = || ["Model", "Dataset", "Server", "Notebook"].map(reconciled);
    wait_for(
        "every object to be reconciled after the restart",
        WAIT,
        || async {
            let n = counts();
            if n[0] >= 2 && n[1..].iter().all(|c| *c >= 1) {
                Ok(Some(()))
            } else {
                Err(format!("{n:?}"))
            }
        },
    )
    .await;
    // A metadata-only change is a watch event, hence another reconcile of the Model and of
    // the Server and Notebook that reference it.
    let before = counts();
    Api::<Model>::namespaced(c.clone(), &ns.name)
        .patch(
            "tuned",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    wait_for(
        "the touched Model and its dependants to be reconciled",
        WAIT,
        || async {
            let n = counts();
            if n[0] > before[0] && n[2] > before[2] && n[3] > before[3] {
                Ok(Some(()))
            } else {
                Err(format!("{before:?} -> {n:?}"))
            }
        },
    )
    .await;
    // Let any late write land in the audit log before reading it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let entries: Vec<_> = audit::entries(&audit_log(), OPERATOR_USER, since)
        .into_iter()
        .filter(|e| {
            e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns.name.as_str())
        })
        .collect();
    let by_verb = audit::count_by_verb_and_resource(&entries);
    eprintln!("requests of a no-op reconcile of 5 objects: {by_verb:?}");
    let writes: Vec<_> = entries
        .iter()
        .filter(|e| e.is_write())
        .map(|e| format!("{} {}", e.verb, e.resource()))
        .collect();
    assert!(writes.is_empty(), "a no-op reconcile wrote: {writes:?}");
    // The operator did talk to the API server (its watches), so the audit log did see it.
    assert!(
        entries
            .iter()
            .any(|e| e.verb == "list" || e.verb == "watch"),
        "no request of the operator in the audit log: {by_verb:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn identity_is_bound_once_per_namespace_and_role() {
    use std::sync::Arc;
    use substratus_core::Cloud;
    use substratus_core::fake::FakeCloud;
    let ns = TestNamespace::new("identity");
    let c = client().await;
    let cloud = Arc::new(FakeCloud::default());
    let small = json!({"image": "loader", "resources": {"cpu": 1, "memory": 1, "disk": 1}});
    let op = RunningOperator::start(&ns.name, cloud.clone() as Arc<dyn Cloud>).await;
    // Three Datasets reconciled concurrently need the same ServiceAccount.
    for i in 0..3 {
        create(&c, &ns.name, dataset(&format!("d{i}"), small.clone())).await;
    }
    for i in 0..3 {
        wait_ready(&c, &ns.name, "Dataset", &format!("d{i}")).await;
    }
    op.stop().await;
    assert_eq!(
        cloud.binding_count(&ns.name, "data-loader"),
        1,
        "concurrent reconciles bound twice: {:?}",
        cloud.calls()
    );

    // A restarted operator finds the binding recorded on the ServiceAccount.
    let op = RunningOperator::start(&ns.name, cloud.clone() as Arc<dyn Cloud>).await;
    create(&c, &ns.name, dataset("d3", small.clone())).await;
    wait_ready(&c, &ns.name, "Dataset", "d3").await;
    assert_eq!(
        cloud.binding_count(&ns.name, "data-loader"),
        1,
        "a restart bound again: {:?}",
        cloud.calls()
    );
    let sa = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(c.clone(), &ns.name)
        .get("data-loader")
        .await
        .unwrap();
    let annotations = sa.metadata.annotations.unwrap();
    assert_eq!(
        annotations["substratus.ai/identity-bound"],
        "principal@test"
    );
    assert_eq!(
        annotations["fake.substratus.ai/principal"],
        "principal@test"
    );
    op.stop().await;
}

#[tokio::test]
async fn the_retained_static_volume_of_a_deleted_model_is_swept() {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let ns = TestNamespace::new("sweep");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    create(
        &c,
        &ns.name,
        model(
            "m",
            json!({"image": "trainer", "params": {"SIM_DURATION": "1s"}}),
        ),
    )
    .await;
    wait_ready(&c, &ns.name, "Model", "m").await;
    // The caches hold the Model, its Job and its volume, but not its pod, which succeeded
    // (only pods that can explain a wait or a failure are kept).
    let pods = Api::<Pod>::namespaced(c.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")),
        "the Model's pod succeeded: {pods:?}"
    );
    let cached = |kind: &str| {
        op.metrics
            .cached
            .get_or_create(&substratus_core::metrics::KindLabels { kind: kind.into() })
            .get()
    };
    wait_for("the caches' sizes recorded", WAIT, || async {
        // Volumes are cluster-scoped: other tests' volumes are cached too.
        let seen = ["Model", "Job", "Pod", "PersistentVolume"].map(cached);
        if seen[..3] == [1, 1, 0] && seen[3] >= 1 {
            Ok(Some(()))
        } else {
            Err(format!("Model, Job, Pod, PersistentVolume: {seen:?}"))
        }
    })
    .await;
    let pvs: Api<PersistentVolume> = Api::all(c.clone());
    let ours = ListParams::default().labels(&format!("substratus.ai/claim-namespace={}", ns.name));
    let names: Vec<String> = pvs
        .list(&ours)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(!names.is_empty(), "the Model's prefix has a static volume");
    for pv in pvs.list(&ours).await.unwrap().items {
        assert_eq!(
            pv.spec
                .and_then(|s| s.persistent_volume_reclaim_policy)
                .as_deref(),
            Some("Retain")
        );
    }
    Api::<Model>::namespaced(c.clone(), &ns.name)
        .delete("m", &Default::default())
        .await
        .unwrap();
    // The claim goes with the Model (owner reference), the volume turns Released, and the
    // janitor deletes it.
    wait_for(
        "the Model's volumes deleted",
        Duration::from_secs(120),
        || {
            let pvs = pvs.clone();
            let ours = ours.clone();
            async move {
                let left = pvs.list(&ours).await.map_err(|e| e.to_string())?.items;
                if left.is_empty() {
                    Ok(Some(()))
                } else {
                    let phases: Vec<_> = left
                        .iter()
                        .map(|p| format!("{:?}", p.status.as_ref().and_then(|s| s.phase.clone())))
                        .collect();
                    Err(format!("{} left: {phases:?}", left.len()))
                }
            }
        },
    )
    .await;
    op.stop().await;
}
