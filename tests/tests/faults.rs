//! Faults on the real control plane: every case ends converged, with no duplicate Jobs and no
//! hot loop. This binary starts its own cluster, because it restarts its components.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use substratus_core::reconcile::FIELD_MANAGER;
use substratus_crds::{Model, Server};
use substratus_tests::audit;
use substratus_tests::cluster::{TestNamespace, client, poll_until, restart_component, wait_for};
use substratus_tests::operator::{OPERATOR_USER, RunningOperator, audit_log, kind_cloud};

const WAIT: Duration = Duration::from_secs(180);

/// The cases run one at a time: a restarted API server would fail the requests of another.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn create_models(c: &kube::Client, ns: &str, n: usize, env: serde_json::Value) {
    let models: Api<Model> = Api::namespaced(c.clone(), ns);
    for i in 0..n {
        let m: Model = serde_json::from_value(json!({
            "apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": format!("m{i}")},
            "spec": {"image": "loader", "env": env, "resources": {"cpu": 0, "memory": 0, "disk": 0}}
        }))
        .unwrap();
        models.create(&PostParams::default(), &m).await.unwrap();
    }
}

/// Waits until `n` Models are Ready, retrying reads across API server restarts.
async fn wait_models_ready(c: &kube::Client, ns: &str, n: usize) {
    let models: Api<Model> = Api::namespaced(c.clone(), ns);
    let waited = poll_until(&format!("{n} Models to be Ready"), WAIT, || async {
        let list = models
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list
            .items
            .iter()
            .filter(|m| m.status.as_ref().is_some_and(|s| s.ready))
            .count();
        if ready == n {
            Ok(Some(()))
        } else {
            // Name the stragglers and what their status says, to explain a timeout.
            let waiting: Vec<String> = list
                .items
                .iter()
                .filter(|m| !m.status.as_ref().is_some_and(|s| s.ready))
                .map(|m| {
                    let why = m
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                        .map(|c| format!("{}: {}", c.reason, c.message))
                        .unwrap_or_else(|| "no status".into());
                    format!("{} ({why})", m.metadata.name.as_deref().unwrap_or(""))
                })
                .collect();
            Err(format!(
                "{ready} of {n} ready; waiting: {}",
                waiting.join("; ")
            ))
        }
    })
    .await;
    if let Err(e) = waited {
        // Only on timeout: what the stragglers' Jobs and pods say.
        let items = models
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        panic!(
            "{e}; their Jobs: {}",
            jobs_of_stragglers(c, ns, &items).await
        );
    }
}

/// The Jobs of the Models not Ready yet, with their status and their pods' phases: tells an
/// operator that missed a finished Job from a Job that never finished.
async fn jobs_of_stragglers(c: &kube::Client, ns: &str, models: &[Model]) -> String {
    let waiting: Vec<&str> = models
        .iter()
        .filter(|m| !m.status.as_ref().is_some_and(|s| s.ready))
        .filter_map(|m| m.metadata.name.as_deref())
        .collect();
    let jobs: Api<Job> = Api::namespaced(c.clone(), ns);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.clone(), ns);
    let Ok(list) = jobs.list(&ListParams::default()).await else {
        return "(Jobs not listed)".into();
    };
    let mut out = Vec::new();
    for job in &list.items {
        let owned = job
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| waiting.contains(&o.name.as_str()));
        if !owned {
            continue;
        }
        let name = job.metadata.name.as_deref().unwrap_or("");
        let st = job.status.clone().unwrap_or_default();
        let conditions: Vec<String> = st
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.status == "True")
            .map(|c| c.type_.clone())
            .collect();
        let phases: Vec<String> = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|p| {
                        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                        let scheduled = p
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
                            .map(|c| format!("{} {}", c.status, c.reason.as_deref().unwrap_or("")));
                        format!(
                            "{} on {} (PodScheduled {})",
                            phase.unwrap_or("no phase"),
                            p.spec
                                .as_ref()
                                .and_then(|s| s.node_name.as_deref())
                                .unwrap_or("no node"),
                            scheduled.as_deref().unwrap_or("unset")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(format!(
            "{name} active={} succeeded={} failed={} conditions={conditions:?} pods={phases:?}",
            st.active.unwrap_or(0),
            st.succeeded.unwrap_or(0),
            st.failed.unwrap_or(0),
        ));
    }
    out.join("; ")
}

/// One Job per Model, each created by the operator and by nobody else.
///
/// The audit log is not the witness here: an API server killed between answering a create and
/// writing its audit line loses that line, so a count of audited creates can fall short of the
/// Jobs that exist. The Jobs' own field managers cannot be lost that way.
async fn assert_no_duplicate_jobs(c: &kube::Client, ns: &str, n: usize, since: jiff::Timestamp) {
    let jobs = Api::<Job>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), n, "Jobs in {ns}");
    for job in &jobs.items {
        let managers: Vec<_> = job
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|f| f.manager.as_deref())
            .collect();
        assert!(
            managers.contains(&FIELD_MANAGER),
            "Job {:?} not written by the operator (managers {managers:?})",
            job.metadata.name
        );
    }
    // Every audited create names one of the Jobs that exist: a create of any other name would
    // have been a duplicate under a second name.
    let names: std::collections::BTreeSet<_> = jobs
        .items
        .iter()
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    for e in audit::entries(&audit_log(), OPERATOR_USER, since) {
        let Some(o) = e.object_ref.as_ref() else {
            continue;
        };
        if e.verb == "create"
            && e.resource() == "jobs"
            && o.namespace.as_deref() == Some(ns)
            && let Some(name) = &o.name
        {
            assert!(
                names.contains(name),
                "a create of Job {name}, which does not exist"
            );
        }
    }
}

async fn converges_across_a_restart_of(component: &str) {
    let ns = TestNamespace::new(&component.replace("kube-", ""));
    let c = client().await;
    let since = jiff::Timestamp::now();
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    create_models(&c, &ns.name, 12, json!({"SIM_DURATION": "3s"})).await;
    // Mid-convergence: some Jobs exist, none finished.
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the first Jobs", WAIT, || async {
        let n = jobs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        Ok((n >= 1).then_some(()))
    })
    .await;
    restart_component(component).unwrap_or_else(|e| panic!("restarting {component}: {e}"));
    // kwok stands in for the kubelets, but unlike a kubelet it does not retry a pod status
    // patch that failed: a pod whose patch fell into the outage stays Pending for good (seen
    // as `rpc error: code = Unavailable` in kwok's log, the pod bound and Pending). A kubelet
    // resyncs its pods; a restarted kwok relists them and plays their stages again. It is
    // restarted once the API server answers reads from etcd again.
    wait_for("the API server to answer again", WAIT, || async {
        Ok(jobs.list(&ListParams::default()).await.ok().map(|_| ()))
    })
    .await;
    restart_component("kwok").unwrap_or_else(|e| panic!("restarting kwok: {e}"));
    wait_models_ready(&c, &ns.name, 12).await;
    assert_no_duplicate_jobs(&c, &ns.name, 12, since).await;
    op.stop().await;
}

#[tokio::test]
async fn converges_without_duplicates_across_an_api_server_restart() {
    let _serial = SERIAL.lock().await;
    converges_across_a_restart_of("kube-apiserver").await;
}

#[tokio::test]
async fn converges_without_duplicates_across_an_etcd_restart() {
    let _serial = SERIAL.lock().await;
    converges_across_a_restart_of("etcd").await;
}

#[tokio::test]
async fn a_storm_of_failing_jobs_settles_without_a_hot_loop() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("storm");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    create_models(&c, &ns.name, 20, json!({"SIM_FAIL": "true"})).await;
    let models: Api<Model> = Api::namespaced(c.clone(), &ns.name);
    wait_for("every Model to show JobFailed", WAIT, || async {
        let list = models
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let failed = list
            .items
            .iter()
            .filter(|m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.reason == "JobFailed")
                })
            })
            .count();
        if failed == 20 {
            Ok(Some(()))
        } else {
            Err(format!("{failed} of 20 failed"))
        }
    })
    .await;
    // Failed Jobs are terminal for their generation: no retries, no rewrites.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_from = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let entries: Vec<_> = audit::entries(&audit_log(), OPERATOR_USER, quiet_from)
        .into_iter()
        .filter(|e| {
            e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns.name.as_str())
        })
        .collect();
    let per_minute = entries.len() as f64 * 3.0;
    eprintln!(
        "requests per minute after 20 failed Jobs settled: {per_minute} ({:?})",
        audit::count_by_verb_and_resource(&entries)
    );
    assert!(
        entries.iter().all(|e| !e.is_write()),
        "writes after the storm settled: {:?}",
        audit::count_by_verb_and_resource(&entries)
    );
    let jobs = Api::<Job>::namespaced(c.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 20, "failed Jobs were recreated");
    op.stop().await;
}

#[tokio::test]
async fn deleting_a_served_model_is_reported_and_keeps_the_operator_healthy() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gone");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    create_models(&c, &ns.name, 2, json!({})).await;
    let servers: Api<Server> = Api::namespaced(c.clone(), &ns.name);
    let s: Server = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Server", "metadata": {"name": "srv"},
        "spec": {"image": "server", "model": {"name": "m0"}}
    }))
    .unwrap();
    servers.create(&PostParams::default(), &s).await.unwrap();
    wait_for("the Server to be ready", WAIT, || async {
        let s = servers.get("srv").await.map_err(|e| e.to_string())?;
        Ok(s.status.filter(|s| s.ready).map(|_| ()))
    })
    .await;
    Api::<Model>::namespaced(c.clone(), &ns.name)
        .delete("m0", &DeleteParams::default())
        .await
        .unwrap();
    let cond = wait_for("the Server to report its Model gone", WAIT, || async {
        let s = servers.get("srv").await.map_err(|e| e.to_string())?;
        let status = s.status.unwrap_or_default();
        Ok(status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "ModelNotFound")
            .filter(|_| !status.ready))
    })
    .await;
    assert!(cond.message.contains("not found"), "{}", cond.message);
    // The running Deployment is left alone: deleting a Model does not cut off traffic at once.
    assert!(
        Api::<Deployment>::namespaced(c.clone(), &ns.name)
            .get_opt("srv-server")
            .await
            .unwrap()
            .is_some()
    );
    // The operator still serves other objects.
    create_models(&c, &ns.name, 0, json!({})).await;
    wait_models_ready(&c, &ns.name, 1).await;
    op.stop().await;
}

/// The Ready condition's `(reason, message)` of an object of `api`.
async fn ready_reason<K>(api: &Api<K>, name: &str) -> Result<(String, String), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o = api.get(name).await.map_err(|e| e.to_string())?;
    let status = serde_json::to_value(&o).map_err(|e| e.to_string())?["status"].clone();
    let (_, reason, message) = substratus_tests::objects::condition(&status, "Ready");
    Ok((reason, message))
}

#[tokio::test]
async fn a_child_the_api_server_refuses_shows_in_status_and_is_not_retried_until_a_change() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("refused");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    create_models(&c, &ns.name, 1, json!({})).await;
    wait_models_ready(&c, &ns.name, 1).await;
    // Secret references whose Secret name Kubernetes refuses: the Deployment and the Job
    // are refused.
    let servers: Api<Server> = Api::namespaced(c.clone(), &ns.name);
    let server: Server = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Server", "metadata": {"name": "srv"},
        "spec": {"image": "srv", "model": {"name": "m0"},
                 "env": {"TOKEN": "${{ secrets.Bad.Name.k }}"},
                 "resources": {"cpu": 0, "memory": 0, "disk": 0}}
    }))
    .unwrap();
    servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    let models: Api<Model> = Api::namespaced(c.clone(), &ns.name);
    let bad: Model = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": "bad-env"},
        "spec": {"image": "loader", "env": {"TOKEN": "${{ secrets.Bad_Name.k }}"},
                 "resources": {"cpu": 0, "memory": 0, "disk": 0}}
    }))
    .unwrap();
    models.create(&PostParams::default(), &bad).await.unwrap();

    let (_, message) = wait_for("Server srv to show ApplyFailed", WAIT, || async {
        match ready_reason(&servers, "srv").await? {
            (r, m) if r == "ApplyFailed" => Ok(Some((r, m))),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        message.contains("srv-server") && message.contains("Bad.Name"),
        "the API server's words are in the message: {message}"
    );
    let (_, message) = wait_for("Model bad-env to show ApplyFailed", WAIT, || async {
        match ready_reason(&models, "bad-env").await? {
            (r, m) if r == "ApplyFailed" => Ok(Some((r, m))),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(message.contains("Bad_Name"), "{message}");
    let server = servers.get("srv").await.unwrap();
    assert!(
        !server.status.unwrap().ready,
        "a Server whose Deployment was refused is not ready"
    );

    // Nothing is retried while nothing changes: at most the writes in flight when the
    // status was written, where a flat 5 s retry made a dozen in this window.
    let quiet_from = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let writes: Vec<_> = audit::entries(&audit_log(), OPERATOR_USER, quiet_from)
        .into_iter()
        .filter(|e| {
            e.is_write()
                && e.object_ref.as_ref().and_then(|o| o.namespace.as_deref())
                    == Some(ns.name.as_str())
        })
        .collect();
    eprintln!(
        "writes in the 30 s after two refused children showed: {:?}",
        audit::count_by_verb_and_resource(&writes)
    );
    assert!(
        writes.len() <= 2,
        "refused children retried without a change: {:?}",
        audit::count_by_verb_and_resource(&writes)
    );

    // Mending the spec mends the object, and its condition follows.
    models
        .patch(
            "bad-env",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"env": {"TOKEN": "literal"}}})),
        )
        .await
        .unwrap();
    wait_for("Model bad-env to become Ready", WAIT, || async {
        match ready_reason(&models, "bad-env").await? {
            (r, _) if r == "JobComplete" => Ok(Some(())),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    op.stop().await;
}
