//! Children changed or deleted by someone else are put back at once, and an operator with
//! nothing to mend writes nothing: both read from the API server's audit log. On the shared
//! local cluster (kind profile), with the operator in-process.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use substratus_tests::audit;
use substratus_tests::cluster::{TestNamespace, client, wait_for};
use substratus_tests::objects::{create, object, wait_ready};
use substratus_tests::operator::{OPERATOR_USER, RunningOperator, audit_log, kind_cloud};

/// How long a child may stay changed before the operator puts it back.
const MEND: Duration = Duration::from_secs(30);

/// The operator's writes in `ns` since `from`, counted by verb and resource.
fn writes_since(ns: &str, from: jiff::Timestamp) -> std::collections::BTreeMap<String, usize> {
    let writes: Vec<_> = audit::entries(&audit_log(), OPERATOR_USER, from)
        .into_iter()
        .filter(|e| {
            e.is_write() && e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns)
        })
        .collect();
    audit::count_by_verb_and_resource(&writes)
}

/// What a user's `kubectl edit` sends: an update under another field manager.
fn edit() -> PatchParams {
    PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    }
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn children_changed_by_others_are_put_back_and_a_settled_operator_writes_nothing() {
    let ns = TestNamespace::new("drift");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    let none = json!({"cpu": 0, "memory": 0, "disk": 0});
    create(
        &c,
        &ns.name,
        object(
            "Model",
            "m",
            json!({"image": "loader", "params": {"epochs": 1}, "resources": none}),
        ),
    )
    .await;
    wait_ready(&c, &ns.name, "Model", "m").await;
    create(
        &c,
        &ns.name,
        object(
            "Server",
            "srv",
            json!({"image": "srv", "model": {"name": "m"}, "resources": none}),
        ),
    )
    .await;
    wait_ready(&c, &ns.name, "Server", "srv").await;

    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    let config_maps: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let accounts: Api<ServiceAccount> = Api::namespaced(c.clone(), &ns.name);
    let applied = deployments.get("srv-server").await.unwrap();
    let (replicas, image) = (applied.spec.as_ref().unwrap().replicas, image_of(&applied));
    let params = config_maps.get("srv-server-params").await.unwrap().data;
    assert!(params.is_some(), "the Server's params ConfigMap has data");

    // Settled: nothing to write.
    let settled = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let quiet = writes_since(&ns.name, settled);
    assert!(quiet.is_empty(), "writes with nothing to do: {quiet:?}");

    // Edits land in a later second than the last apply (managedFields times are to the
    // second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // `kubectl scale`, `kubectl set image`, `kubectl edit` of the params, and deletions.
    deployments
        .patch_scale(
            "srv-server",
            &PatchParams {
                field_manager: Some("kubectl".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    deployments
        .patch(
            "srv-server",
            &edit(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "serve", "image": "someone/else:latest"}]}}}})),
        )
        .await
        .unwrap();
    config_maps
        .patch(
            "srv-server-params",
            &edit(),
            &Patch::Merge(json!({"data": {"params.json": "{\"edited\": true}"}})),
        )
        .await
        .unwrap();
    services
        .delete("srv-server", &DeleteParams::default())
        .await
        .unwrap();
    config_maps
        .delete("m-model-params", &DeleteParams::default())
        .await
        .unwrap();
    accounts
        .delete("model-server", &DeleteParams::default())
        .await
        .unwrap();

    wait_for("the children to be put back", MEND, || async {
        let d = deployments
            .get("srv-server")
            .await
            .map_err(|e| e.to_string())?;
        let now = (d.spec.as_ref().unwrap().replicas, image_of(&d));
        if now != (replicas, image.clone()) {
            return Err(format!("Deployment replicas and image {now:?}"));
        }
        let cm = config_maps
            .get("srv-server-params")
            .await
            .map_err(|e| e.to_string())?;
        if cm.data != params {
            return Err(format!("params {:?}", cm.data));
        }
        for (what, found) in [
            (
                "Service srv-server",
                services
                    .get_opt("srv-server")
                    .await
                    .ok()
                    .flatten()
                    .is_some(),
            ),
            (
                "ConfigMap m-model-params",
                config_maps
                    .get_opt("m-model-params")
                    .await
                    .ok()
                    .flatten()
                    .is_some(),
            ),
            (
                "ServiceAccount model-server",
                accounts
                    .get_opt("model-server")
                    .await
                    .ok()
                    .flatten()
                    .is_some(),
            ),
        ] {
            if !found {
                return Err(format!("{what} missing"));
            }
        }
        Ok(Some(()))
    })
    .await;

    // Mended, and settled again: no write follows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let quiet = writes_since(&ns.name, settled);
    assert!(quiet.is_empty(), "writes after mending: {quiet:?}");
    op.stop().await;
}

#[tokio::test]
async fn a_namespace_deleted_and_created_again_gets_its_service_accounts_again() {
    let ns = TestNamespace::new("renew");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    let none = json!({"cpu": 0, "memory": 0, "disk": 0});
    let model = |name: &str| object("Model", name, json!({"image": "loader", "resources": none}));
    create(&c, &ns.name, model("before")).await;
    wait_ready(&c, &ns.name, "Model", "before").await;

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the namespace to be gone",
        Duration::from_secs(90),
        || async {
            match namespaces.get_opt(&ns.name).await {
                Ok(None) => Ok(Some(())),
                other => Err(format!("{:?}", other.map(|n| n.map(|n| n.status)))),
            }
        },
    )
    .await;
    let fresh: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns.name}})).unwrap();
    namespaces
        .create(&Default::default(), &fresh)
        .await
        .unwrap();

    // The same operator, still running: the new namespace's first Model gets its account.
    create(&c, &ns.name, model("after")).await;
    wait_ready(&c, &ns.name, "Model", "after").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(c.clone(), &ns.name);
    assert!(
        accounts.get_opt("modeller").await.unwrap().is_some(),
        "the modeller ServiceAccount is created in the new namespace"
    );
    op.stop().await;
}
