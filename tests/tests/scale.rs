//! The Server's scale subresource: `kubectl scale` and a HorizontalPodAutoscaler find its
//! replicas and its pods' selector, and the operator follows the replicas they set.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::{Value, json};
use substratus_tests::cluster::{TestNamespace, client, kubectl_json, kubectl_with, wait_for};
use substratus_tests::objects::{WAIT, create, wait_ready};
use substratus_tests::operator::{RunningOperator, kind_cloud};

fn kubectl_ok(args: &[&str]) -> String {
    kubectl_with(args, None).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

#[tokio::test]
async fn kubectl_scale_and_an_autoscaler_drive_a_server_through_its_scale_subresource() {
    let ns = TestNamespace::new("scale");
    let ns = ns.name.as_str();
    let c = client().await;
    let _op = RunningOperator::start(ns, kind_cloud("kind")).await;
    create(
        &c,
        ns,
        json!({"apiVersion": "substratus.ai/v1", "kind": "Model",
        "metadata": {"name": "base"}, "spec": {"image": "loader"}}),
    )
    .await;
    create(
        &c,
        ns,
        json!({"apiVersion": "substratus.ai/v1", "kind": "Server",
        "metadata": {"name": "srv"}, "spec": {"image": "server", "model": {"name": "base"}}}),
    )
    .await;
    wait_ready(&c, ns, "Server", "srv").await;

    let scale_of = || {
        serde_json::from_str::<Value>(&kubectl_ok(&[
            "get",
            "--raw",
            &format!("/apis/substratus.ai/v1/namespaces/{ns}/servers/srv/scale"),
        ]))
        .unwrap()
    };
    let scale = scale_of();
    assert_eq!(
        scale["status"]["selector"], "role=run,server=srv",
        "{scale}"
    );
    assert_eq!(scale["spec"]["replicas"], 1, "{scale}");

    // `kubectl scale` writes spec.replicas through the subresource; the Deployment follows,
    // and the Server's status counts the ready replicas.
    kubectl_ok(&["scale", "server", "srv", "-n", ns, "--replicas=3"]);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), ns);
    wait_for("the Deployment at 3 replicas", WAIT, || async {
        let d = deployments
            .get("srv-server")
            .await
            .map_err(|e| e.to_string())?;
        let want = d.spec.as_ref().and_then(|s| s.replicas);
        if want == Some(3) {
            Ok(Some(()))
        } else {
            Err(format!("spec.replicas {want:?}"))
        }
    })
    .await;
    wait_for("3 ready replicas in the scale status", WAIT, || async {
        let s = scale_of();
        if s["status"]["replicas"] == 3 {
            Ok(Some(()))
        } else {
            Err(format!("{s}"))
        }
    })
    .await;

    // An autoscaler targeting the Server resolves its scale and selector (its metrics are
    // another matter: this cluster has no metrics server).
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "srv", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "substratus.ai/v1", "kind": "Server",
            "name": "srv"},
            "minReplicas": 1, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]}});
    kubectl_with(&["create", "-f", "-"], Some(&hpa)).unwrap();
    let conditions = wait_for(
        "the autoscaler to read the Server's scale",
        WAIT,
        || async {
            let h = kubectl_json("hpa", "srv", ns)?;
            let conditions = h["status"]["conditions"].clone();
            let able = conditions
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "AbleToScale")
                .cloned();
            match able {
                Some(c) if c["status"] == "True" => Ok(Some(conditions)),
                _ => Err(format!("{h}")),
            }
        },
    )
    .await;
    let text = conditions.to_string();
    assert!(
        !text.contains("InvalidSelector") && !text.contains("FailedGetScale"),
        "{text}"
    );
    let h = kubectl_json("hpa", "srv", ns).unwrap();
    assert_eq!(
        h["status"]["currentReplicas"], 3,
        "the autoscaler counts the Server's replicas: {h}"
    );
}
