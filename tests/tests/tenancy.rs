//! Tenancy on the real control plane: what a tenant may write cannot widen what the
//! operator's credentials reach. Tenant A holds a Role allowing everything on `substratus.ai`
//! in its namespace, status included, and acts through impersonation as its ServiceAccount.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use substratus_core::names::{self, Kind};
use substratus_tests::cluster::{
    TestNamespace, client, kubectl, kubectl_json, kubectl_with as run,
};
use substratus_tests::objects::{wait_ready, wait_reason};
use substratus_tests::operator::{OPERATOR_USER, RunningOperator, kind_cloud};

/// Tenant A: a ServiceAccount with every verb on every `substratus.ai` resource of its
/// namespace, `*/status` included.
fn tenant(ns: &str) -> String {
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "tenant", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "tenant", "namespace": ns},
            "rules": [{"apiGroups": ["substratus.ai"], "resources": ["*"], "verbs": ["*"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "tenant", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                "name": "tenant"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}]},
    ]});
    run(&["apply", "-f", "-"], Some(&objects)).unwrap();
    format!("--as=system:serviceaccount:{ns}:tenant")
}

fn model(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": "Model",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[tokio::test]
async fn a_forged_artifacts_url_gets_no_volume_no_job_and_no_signed_url() {
    let ns = TestNamespace::new("tenant-a");
    let ns = ns.name.as_str();
    let c = client().await;
    let as_tenant = tenant(ns);
    // `kubectl auth can-i` prints yes or no; "no" exits 1.
    let can = |verb: &str, what: &str| {
        let out = kubectl()
            .args(["auth", "can-i", verb, what, "-n", ns, &as_tenant])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(can("patch", "models.substratus.ai/status"), "yes");
    assert_eq!(can("create", "persistentvolumeclaims"), "no");

    let cloud = kind_cloud("kind");
    let config = cloud.config().clone();
    let bucket = config.artifact_bucket.to_string();
    let own = |name: &str| {
        config
            .artifact_bucket
            .join(&names::storage_prefix(
                &config.cluster_name,
                ns,
                Kind::Model,
                name,
            ))
            .to_string()
    };
    let b_prefix = names::storage_prefix(&config.cluster_name, "tenant-b", Kind::Model, "weights");
    let forged = [
        ("into-b", format!("{bucket}/{b_prefix}")),
        ("the-root", bucket.clone()),
        ("comma", format!("{},implicit-dirs,uid=0", own("comma"))),
        ("upload", format!("{bucket}/{b_prefix}")),
    ];
    // Made and forged while no operator runs, so that nothing was made before the forgery.
    for (name, url) in &forged {
        let spec = if *name == "upload" {
            json!({"build": {"upload": {"md5Checksum": "0123456789abcdef0123456789abcdef",
                "requestID": "r1"}}})
        } else {
            json!({"image": "loader"})
        };
        run(
            &["create", "-f", "-", &as_tenant],
            Some(&model(ns, name, spec)),
        )
        .unwrap();
        let patch = json!({"status": {"artifacts": {"url": url}}}).to_string();
        run(
            &[
                "patch",
                "model",
                name,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
                &as_tenant,
            ],
            None,
        )
        .unwrap();
    }

    let _op = RunningOperator::start(ns, cloud.clone()).await;
    // The operator's own account (the chart's RBAC) creates notebook tokens and reads none.
    let operator = format!("--as={OPERATOR_USER}");
    let operator_can = |verb: &str| {
        let out = kubectl()
            .args(["auth", "can-i", verb, "secrets", "-n", ns, &operator])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for verb in ["get", "list", "watch", "update", "delete"] {
        assert_eq!(operator_can(verb), "no", "the operator can {verb} Secrets");
    }
    assert_eq!(operator_can("create"), "yes");
    for (name, url) in &forged {
        let message = wait_reason(&c, ns, "Model", name, "ForeignArtifactsURL").await;
        assert!(message.contains(&own(name)), "{message}");
        let o = kubectl_json("model", name, ns).unwrap();
        assert_eq!(
            o["status"]["artifacts"]["url"],
            url.as_str(),
            "kept as written"
        );
        assert!(
            o["status"]["buildUpload"]["signedURL"].is_null(),
            "a URL was signed: {o}"
        );
    }
    // Nothing was made for any of them: no Job, no claim, and no volume names a forged place.
    let jobs = Api::<Job>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "{:?}", jobs.items);
    let claims = Api::<PersistentVolumeClaim>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(claims.items.is_empty(), "{:?}", claims.items);
    let volumes = serde_json::to_string(
        &Api::<PersistentVolume>::all(c.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    for needle in [b_prefix.as_str(), "implicit-dirs", &own("the-root")] {
        assert!(!volumes.contains(needle), "a volume names {needle}");
    }

    // Removing the field, as the condition says, lets the object run in its own place.
    let remove = r#"[{"op":"remove","path":"/status/artifacts/url"}]"#;
    run(
        &[
            "patch",
            "model",
            "into-b",
            "-n",
            ns,
            "--subresource=status",
            "--type=json",
            "-p",
            remove,
            &as_tenant,
        ],
        None,
    )
    .unwrap();
    wait_ready(&c, ns, "Model", "into-b").await;
    let o = kubectl_json("model", "into-b", ns).unwrap();
    assert_eq!(o["status"]["artifacts"]["url"], own("into-b").as_str());
}

#[tokio::test]
async fn a_role_account_someone_else_made_is_never_taken_over() {
    let ns = TestNamespace::new("tenant-sa");
    let ns = ns.name.as_str();
    let c = client().await;
    // The namespace's own `modeller` account, unrelated to Substratus.
    let theirs = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "modeller", "namespace": ns, "labels": {"team": "a"}}});
    run(&["create", "-f", "-"], Some(&theirs)).unwrap();
    let _op = RunningOperator::start(ns, kind_cloud("kind")).await;
    run(
        &["create", "-f", "-"],
        Some(&model(ns, "m", json!({"image": "loader"}))),
    )
    .unwrap();
    let message = wait_reason(&c, ns, "Model", "m", "ServiceAccountNotManaged").await;
    assert!(message.contains(&format!("{ns}/modeller")), "{message}");
    let sa = kubectl_json("serviceaccount", "modeller", ns).unwrap();
    assert_eq!(
        sa["metadata"]["labels"],
        json!({"team": "a"}),
        "the account was changed: {sa}"
    );
    assert!(sa["metadata"]["annotations"].is_null(), "{sa}");
    let jobs = Api::<Job>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "a Job runs as their account");
    // Once the name is free, the next retry makes the operator's own and the Model runs.
    run(&["delete", "serviceaccount", "modeller", "-n", ns], None).unwrap();
    wait_ready(&c, ns, "Model", "m").await;
    let sa = kubectl_json("serviceaccount", "modeller", ns).unwrap();
    assert_eq!(
        sa["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "substratus"
    );
}
