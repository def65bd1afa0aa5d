//! Status that follows the pods: each kind waits on a full GPU pool and shows it, then says
//! so within seconds once capacity frees; a container that cannot start or keeps failing is
//! named with why. On the GKE profile, with the operator in-process.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use substratus_tests::cluster::{TestNamespace, client, wait_for};
use substratus_tests::objects::{create, object, readiness, wait_ready, wait_reason};
use substratus_tests::operator::{RunningOperator, kind_cloud};

/// How long a status may lag behind its pods.
const FOLLOW: Duration = Duration::from_secs(30);

/// A pod holding every L4 of one node of the GKE L4 pool (4 GPUs a node).
fn blocker(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "blocker",
                "resources": {"limits": {"nvidia.com/gpu": "4"}, "requests": {"nvidia.com/gpu": "4"}}}]
        }
    }))
    .unwrap()
}

fn one_l4() -> Value {
    json!({"cpu": 0, "memory": 0, "disk": 0, "gpu": {"type": "nvidia-l4", "count": 1}})
}

#[tokio::test]
async fn status_follows_pods_from_unschedulable_to_running_for_every_kind() {
    let ns = TestNamespace::new("follow");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("gcp")).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    for name in ["full-1", "full-2"] {
        pods.create(&PostParams::default(), &blocker(name))
            .await
            .unwrap();
    }
    wait_for("the L4 pool to be full", FOLLOW, || async {
        let mut running = 0;
        for name in ["full-1", "full-2"] {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
                running += 1;
            }
        }
        Ok((running == 2).then_some(()))
    })
    .await;

    create(
        &c,
        &ns.name,
        object("Model", "base", json!({"image": "loader"})),
    )
    .await;
    wait_ready(&c, &ns.name, "Model", "base").await;
    // The Model's Job runs long enough to be seen running, not only done.
    let spec = json!({"image": "trainer", "env": {"SIM_DURATION": "120s"}, "resources": one_l4()});
    create(&c, &ns.name, object("Model", "tune", spec)).await;
    let spec = json!({"image": "srv", "model": {"name": "base"}, "resources": one_l4()});
    create(&c, &ns.name, object("Server", "srv", spec)).await;
    let spec = json!({"image": "nb", "model": {"name": "base"}, "resources": one_l4()});
    create(&c, &ns.name, object("Notebook", "nb", spec)).await;
    for (kind, name) in [("Model", "tune"), ("Server", "srv"), ("Notebook", "nb")] {
        let message = wait_reason(&c, &ns.name, kind, name, "Unschedulable").await;
        assert!(message.contains("nvidia.com/gpu"), "{kind}: {message}");
    }

    for name in ["full-1", "full-2"] {
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }
    for (kind, name, reason) in [
        ("Model", "tune", "JobNotComplete"),
        ("Server", "srv", "DeploymentReady"),
        ("Notebook", "nb", "PodReady"),
    ] {
        wait_for(
            &format!("{kind} {name} to follow its running pod"),
            FOLLOW,
            || async {
                let (_, r, m) = readiness(&c, &ns.name, kind, name).await?;
                if r == reason {
                    Ok(Some(()))
                } else {
                    Err(format!("{r}: {m}"))
                }
            },
        )
        .await;
    }
    op.stop().await;
}

#[tokio::test]
async fn containers_that_cannot_start_or_keep_failing_are_named_in_status() {
    let ns = TestNamespace::new("crash");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    let small = json!({"cpu": 0, "memory": 0, "disk": 0});
    create(
        &c,
        &ns.name,
        object(
            "Model",
            "base",
            json!({"image": "loader", "resources": small}),
        ),
    )
    .await;
    wait_ready(&c, &ns.name, "Model", "base").await;

    // The kubelet's states, as the simulated nodes show them.
    let oom = json!({"SIM_WAITING": "CrashLoopBackOff", "SIM_WAITING_MESSAGE": "back-off 40s",
                     "SIM_LAST_EXIT": "OOMKilled"});
    let spec = json!({"image": "srv", "model": {"name": "base"}, "env": oom, "resources": small});
    create(&c, &ns.name, object("Server", "oom", spec)).await;
    let crash = json!({"SIM_WAITING": "CrashLoopBackOff", "SIM_LAST_EXIT": "Error"});
    let spec = json!({"image": "nb", "env": crash, "resources": small});
    create(&c, &ns.name, object("Notebook", "crash", spec)).await;
    let config = json!({"SIM_WAITING": "CreateContainerConfigError",
                        "SIM_WAITING_MESSAGE": "secret \"hub\" not found"});
    let spec = json!({"image": "loader", "env": config, "resources": small});
    create(&c, &ns.name, object("Model", "config", spec)).await;

    let message = wait_reason(&c, &ns.name, "Server", "oom", "OOMKilled").await;
    assert!(message.contains("exit code 137"), "{message}");
    assert!(message.contains("spec.resources.memory"), "{message}");
    let message = wait_reason(&c, &ns.name, "Notebook", "crash", "CrashLoopBackOff").await;
    assert!(message.contains("keeps failing"), "{message}");
    let message = wait_reason(&c, &ns.name, "Model", "config", "ContainerConfigError").await;
    assert!(message.contains("secret \"hub\" not found"), "{message}");
    op.stop().await;
}

#[tokio::test]
async fn models_that_name_each_other_as_base_report_the_cycle() {
    let ns = TestNamespace::new("cycle");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    for (name, base) in [("a", "b"), ("b", "a")] {
        let spec = json!({"image": "trainer", "model": {"name": base}});
        create(&c, &ns.name, object("Model", name, spec)).await;
    }
    let message = wait_reason(&c, &ns.name, "Model", "a", "ReferenceCycle").await;
    assert!(message.contains("a -> b -> a"), "{message}");
    let message = wait_reason(&c, &ns.name, "Model", "b", "ReferenceCycle").await;
    assert!(message.contains("b -> a -> b"), "{message}");
    op.stop().await;
}

#[tokio::test]
async fn a_model_that_runs_again_rolls_its_servers_and_notebooks_and_tells_its_fine_tunes() {
    let ns = TestNamespace::new("cascade");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    let none = json!({"cpu": 0, "memory": 0, "disk": 0});
    create(
        &c,
        &ns.name,
        object(
            "Model",
            "base",
            json!({"image": "loader", "params": {"v": 1}, "resources": none}),
        ),
    )
    .await;
    wait_ready(&c, &ns.name, "Model", "base").await;
    let uses_base = json!({"image": "img", "model": {"name": "base"}, "resources": none});
    create(&c, &ns.name, object("Server", "srv", uses_base.clone())).await;
    create(&c, &ns.name, object("Notebook", "nb", uses_base.clone())).await;
    create(&c, &ns.name, object("Model", "tune", uses_base)).await;
    for (kind, name) in [("Server", "srv"), ("Notebook", "nb"), ("Model", "tune")] {
        wait_ready(&c, &ns.name, kind, name).await;
    }
    let up_to_date = || async {
        let s = substratus_tests::objects::status(&c, &ns.name, "Model", "tune").await;
        substratus_tests::objects::condition(&s, "UpToDate")
    };
    let (status, reason, _) = up_to_date().await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "InputsUnchanged")
    );
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let first_notebook_pod = pods.get("nb-notebook").await.unwrap().metadata.uid;

    // The base Model runs again on a new spec.
    substratus_tests::objects::api(&c, &ns.name, "Model")
        .patch(
            "base",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"params": {"v": 2}}})),
        )
        .await
        .unwrap();
    wait_for(
        "the base Model to complete its second run",
        FOLLOW * 4,
        || async {
            let s = substratus_tests::objects::status(&c, &ns.name, "Model", "base").await;
            let (status, _, _) = substratus_tests::objects::condition(&s, "Complete");
            let complete = s["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Complete")
                .map(|c| c["observedGeneration"].clone());
            Ok((status == "True" && complete == Some(json!(2))).then_some(()))
        },
    )
    .await;

    // The Server's pods and the Notebook's pod start again on the new artifacts.
    let key = "substratus.ai/model-generation";
    wait_for(
        "Server pods and the Notebook pod of the new run",
        FOLLOW * 2,
        || async {
            let list = pods
                .list(&kube::api::ListParams::default().labels("server=srv"))
                .await
                .map_err(|e| e.to_string())?;
            let on_new: Vec<_> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(key))
                        .cloned()
                })
                .collect();
            if on_new.is_empty() || on_new.iter().any(|g| g.as_deref() != Some("2")) {
                return Err(format!("server pods' {key}: {on_new:?}"));
            }
            let nb = pods
                .get_opt("nb-notebook")
                .await
                .map_err(|e| e.to_string())?;
            let nb = nb.ok_or("no notebook pod")?;
            if nb.metadata.uid == first_notebook_pod
                || nb
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(key))
                    .map(String::as_str)
                    != Some("2")
            {
                return Err("the notebook pod is the old one".into());
            }
            Ok(Some(()))
        },
    )
    .await;
    wait_ready(&c, &ns.name, "Server", "srv").await;
    wait_ready(&c, &ns.name, "Notebook", "nb").await;

    // The fine-tune is still Ready (its artifacts stay), and says its base changed.
    wait_for("the fine-tune to say its base changed", FOLLOW, || async {
        let (status, reason, message) = up_to_date().await;
        Ok((status == "False" && reason == "BaseModelChanged").then_some(message))
    })
    .await;
    wait_ready(&c, &ns.name, "Model", "tune").await;
    op.stop().await;
}
