//! The controllers with each real cloud backend (not the kind stand-in) on the matching
//! simulated node pools: GKE, EKS and AKS. A GPU Model's pod lands on that cloud's GPU pool,
//! mounts its prefix the way the cloud does (GCS FUSE inline volume; Mountpoint or Blob CSI
//! static volume), its ServiceAccount carries the workload identity annotation, and the
//! cloud-side binding (IAM policy, trust policy, federated credential) is written once —
//! against local fakes of those APIs that check the documented request shapes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Node, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use substratus_clouds::gpu::GpuCatalog;
use substratus_core::Cloud;
use substratus_core::cloud::{BucketUrl, CloudConfig};
use substratus_crds::Model;
use substratus_tests::cluster::{TestNamespace, client, wait_for};
use substratus_tests::fake_api::{Fake, json_ok, status};
use substratus_tests::operator::{RunningOperator, aws_cloud};

async fn gpu_model(c: &kube::Client, ns: &str, gpu: &str) {
    let m: Model = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": "m"},
        "spec": {"image": "trainer", "params": {"SIM_DURATION": "1s"},
                 "resources": {"cpu": 1, "memory": 1, "disk": 1, "gpu": {"type": gpu, "count": 1}}},
    }))
    .unwrap();
    Api::<Model>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &m)
        .await
        .unwrap();
    wait_for("Model m ready", Duration::from_secs(120), || async {
        let m = Api::<Model>::namespaced(c.clone(), ns)
            .get("m")
            .await
            .map_err(|e| e.to_string())?;
        let st = m.status.unwrap_or_default();
        if st.ready {
            Ok(Some(()))
        } else {
            Err(format!("{:?}", st.conditions))
        }
    })
    .await;
}

/// The Model's run pod and the labels of the node it ran on.
async fn run_pod(c: &kube::Client, ns: &str) -> (Pod, std::collections::BTreeMap<String, String>) {
    let pods = Api::<Pod>::namespaced(c.clone(), ns)
        .list(&ListParams::default().labels("model=m,role=run"))
        .await
        .unwrap()
        .items;
    let pod = pods.into_iter().next().expect("the Model's pod");
    let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
    let labels = Api::<Node>::all(c.clone())
        .get(&node)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    (pod, labels)
}

async fn sa_annotations(c: &kube::Client, ns: &str) -> std::collections::BTreeMap<String, String> {
    Api::<ServiceAccount>::namespaced(c.clone(), ns)
        .get("modeller")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
}

/// The CSI part of the static volume behind the pod's artifacts claim.
async fn claimed_csi(c: &kube::Client, ns: &str, pod: &Pod) -> Value {
    let claim = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .expect("a claim volume")
        .claim_name
        .clone();
    let pvs = Api::<PersistentVolume>::all(c.clone())
        .list(&ListParams::default().labels(&format!(
            "substratus.ai/claim={claim},substratus.ai/claim-namespace={ns}"
        )))
        .await
        .unwrap()
        .items;
    assert_eq!(pvs.len(), 1, "one static volume for claim {claim}");
    serde_json::to_value(pvs[0].spec.as_ref().unwrap()).unwrap()
}

/// The pod mounts only the Model's own artifacts folder (`subPath`) of its namespace's
/// read-write volume, and the namespace holds one read-only and one read-write claim.
async fn mounted_by_sub_path_of_the_namespace_s_claims(c: &kube::Client, ns: &str, pod: &Pod) {
    let artifacts = pod.spec.as_ref().unwrap().containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/content/artifacts")
        .expect("the artifacts mount")
        .clone();
    let sub_path = artifacts.sub_path.expect("mounted by subPath");
    assert!(
        sub_path.ends_with("/artifacts") && sub_path.split('/').count() == 2,
        "{sub_path}"
    );
    let claims = Api::<PersistentVolumeClaim>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut names: Vec<_> = claims.items.iter().map(|c| c.name_any()).collect();
    names.sort();
    assert_eq!(names, ["substratus-bucket-ro", "substratus-bucket-rw"]);
}

#[tokio::test]
async fn gcp_backend_on_gke_pools() {
    let ns = TestNamespace::new("gke");
    let c = client().await;
    let gsa = "substratus@proj-1.iam.gserviceaccount.com";
    let policy = Arc::new(Mutex::new(json!({"etag": "e0"})));
    let p = policy.clone();
    let google = Fake::start(move |s| {
        if s.path.ends_with("/service-accounts/default/token") {
            return json_ok(
                json!({"access_token": "tok", "expires_in": 3600, "token_type": "Bearer"}),
            );
        }
        if s.headers.get("authorization").map(String::as_str) != Some("Bearer tok") {
            return status(401, "token");
        }
        let resource = format!("/v1/projects/proj-1/serviceAccounts/{gsa}");
        if s.path == format!("{resource}:getIamPolicy") {
            return json_ok(p.lock().unwrap().clone());
        }
        if s.path == format!("{resource}:setIamPolicy") {
            let mut next = s.json()["policy"].clone();
            next["etag"] = json!("e1");
            *p.lock().unwrap() = next.clone();
            return json_ok(next);
        }
        status(404, "")
    })
    .await;
    let cloud = substratus_clouds::gcp::GcpCloud::new(
        CloudConfig {
            cluster_name: "gke-1".into(),
            artifact_bucket: BucketUrl::parse("gs://proj-1-substratus-artifacts").unwrap(),
            registry: "us-central1-docker.pkg.dev/proj-1/substratus".into(),
            principal: Some(gsa.into()),
            tenancy: Default::default(),
        },
        substratus_clouds::gcp::GcpSettings {
            project: "proj-1".into(),
            storage_endpoint: "http://127.0.0.1:9".into(),
            signed_url_endpoint: None,
            iam_endpoint: google.endpoint.clone(),
            iam_credentials_endpoint: google.endpoint.clone(),
            metadata_endpoint: google.endpoint.clone(),
            artifact_registry_endpoint: "http://127.0.0.1:9".into(),
            project_number: None,
        },
        GpuCatalog::gcp(),
    )
    .unwrap();
    let op = RunningOperator::start(&ns.name, Arc::new(cloud) as Arc<dyn Cloud>).await;
    gpu_model(&c, &ns.name, "nvidia-l4").await;
    let (pod, node) = run_pod(&c, &ns.name).await;
    assert_eq!(node["cloud.google.com/gke-accelerator"], "nvidia-l4");
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()["gke-gcsfuse/volumes"],
        "true"
    );
    let csi: Vec<_> = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.csi.as_ref())
        .collect();
    assert!(!csi.is_empty(), "the prefix is a GCS FUSE volume");
    assert_eq!(csi[0].driver, "gcsfuse.csi.storage.gke.io");
    let attrs = csi[0].volume_attributes.as_ref().unwrap();
    assert_eq!(attrs["bucketName"], "proj-1-substratus-artifacts");
    assert!(attrs["mountOptions"].contains("only-dir="), "{attrs:?}");
    assert_eq!(
        sa_annotations(&c, &ns.name).await["iam.gke.io/gcp-service-account"],
        gsa
    );
    op.stop().await;
    assert_eq!(google.seen_at("POST", ":setIamPolicy").len(), 1);
    let member = format!("serviceAccount:proj-1.svc.id.goog[{}/modeller]", ns.name);
    assert!(policy.lock().unwrap().to_string().contains(&member));
}

/// `TENANCY=namespace` on GKE: two namespaces' Models run as their own accounts (no Google
/// service account annotation), each account records its namespace's principal set, each
/// Model mounts a prefix inside its namespace's folder, and the bucket's policy grants each
/// set only its folder — against a fake of the bucket and Artifact Registry IAM APIs.
#[tokio::test]
async fn gcp_namespace_tenancy_gives_each_namespace_its_own_principal_and_folder() {
    let (a, b) = (TestNamespace::new("gke-a"), TestNamespace::new("gke-b"));
    let c = client().await;
    let bucket = Arc::new(Mutex::new(json!({"etag": "CAE="})));
    let repositories = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, Value>::new(),
    ));
    let (p, r) = (bucket.clone(), repositories.clone());
    let google = Fake::start(move |s| {
        if s.path.ends_with("/service-accounts/default/token") {
            return json_ok(
                json!({"access_token": "tok", "expires_in": 3600, "token_type": "Bearer"}),
            );
        }
        if s.headers.get("authorization").map(String::as_str) != Some("Bearer tok") {
            return status(401, "token");
        }
        if s.path == "/storage/v1/b/proj-1-substratus-artifacts/iam" {
            let mut current = p.lock().unwrap();
            if s.method == "PUT" {
                if s.json()["etag"] != current["etag"] {
                    return status(412, "Precondition Failed");
                }
                let mut next = s.json();
                next["etag"] = json!(format!("{}+", current["etag"].as_str().unwrap()));
                *current = next;
            }
            return json_ok(current.clone());
        }
        let repos = "/v1/projects/proj-1/locations/us-central1/repositories";
        if s.method == "POST" && s.path == repos {
            let id = s.query.get("repositoryId").cloned().unwrap_or_default();
            r.lock().unwrap().entry(id).or_insert(json!({"etag": "r0"}));
            return json_ok(json!({"name": "operations/x"}));
        }
        if let Some(rest) = s.path.strip_prefix(&format!("{repos}/")) {
            let (id, call) = rest.split_once(':').unwrap_or((rest, ""));
            let mut all = r.lock().unwrap();
            let Some(policy) = all.get_mut(id) else {
                return status(404, "NOT_FOUND");
            };
            if call == "setIamPolicy" {
                *policy = s.json()["policy"].clone();
            }
            return json_ok(policy.clone());
        }
        status(404, "")
    })
    .await;
    let mut settings = substratus_clouds::gcp::GcpSettings::public("proj-1");
    settings.storage_endpoint = google.endpoint.clone();
    settings.iam_endpoint = google.endpoint.clone();
    settings.iam_credentials_endpoint = google.endpoint.clone();
    settings.metadata_endpoint = google.endpoint.clone();
    settings.artifact_registry_endpoint = google.endpoint.clone();
    settings.project_number = Some("4242".into());
    let cloud: Arc<dyn Cloud> = Arc::new(
        substratus_clouds::gcp::GcpCloud::new(
            CloudConfig {
                cluster_name: "gke-1".into(),
                artifact_bucket: BucketUrl::parse("gs://proj-1-substratus-artifacts").unwrap(),
                registry: "us-central1-docker.pkg.dev/proj-1/substratus".into(),
                principal: Some("substratus@proj-1.iam.gserviceaccount.com".into()),
                tenancy: substratus_core::cloud::Tenancy::Namespace,
            },
            settings,
            GpuCatalog::gcp(),
        )
        .unwrap(),
    );
    let ops = [
        RunningOperator::start(&a.name, cloud.clone()).await,
        RunningOperator::start(&b.name, cloud.clone()).await,
    ];
    let set_of = |ns: &str| {
        format!(
            "principalSet://iam.googleapis.com/projects/4242/locations/global/workloadIdentityPools/proj-1.svc.id.goog/namespace/{ns}"
        )
    };
    for ns in [&a.name, &b.name] {
        gpu_model(&c, ns, "nvidia-l4").await;
        let annotations = sa_annotations(&c, ns).await;
        assert!(
            !annotations.contains_key("iam.gke.io/gcp-service-account"),
            "the account acts as itself: {annotations:?}"
        );
        assert_eq!(annotations["substratus.ai/identity-bound"], set_of(ns));
        let (pod, _) = run_pod(&c, ns).await;
        let dirs: Vec<String> = pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| {
                v.csi
                    .as_ref()?
                    .volume_attributes
                    .as_ref()?
                    .get("mountOptions")
                    .cloned()
            })
            .collect();
        assert!(
            !dirs.is_empty()
                && dirs
                    .iter()
                    .all(|d| d.contains(&format!("only-dir=namespaces/{ns}/"))),
            "{ns} mounts only its folder: {dirs:?}"
        );
    }
    for op in ops {
        op.stop().await;
    }
    let policy = bucket.lock().unwrap().clone();
    assert_eq!(policy["version"], 3);
    let bindings = policy["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2, "one binding per namespace: {policy}");
    for ns in [&a.name, &b.name] {
        let own: Vec<&Value> = bindings
            .iter()
            .filter(|x| {
                x["members"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(set_of(ns)))
            })
            .collect();
        assert_eq!(own.len(), 1, "{ns}: {policy}");
        assert_eq!(own[0]["members"].as_array().unwrap().len(), 1);
        assert!(
            own[0]["condition"]["expression"]
                .as_str()
                .unwrap()
                .ends_with(&format!("objects/namespaces/{ns}/\")")),
            "{}",
            own[0]
        );
        let repo = &repositories.lock().unwrap()[&format!("substratus-{ns}")];
        assert_eq!(repo["bindings"][0]["members"], json!([set_of(ns)]));
    }
}

#[tokio::test]
async fn aws_backend_on_eks_pools() {
    let ns = TestNamespace::new("eks");
    let c = client().await;
    let role = "arn:aws:iam::123456789012:role/substratus";
    let issuer = "https://oidc.eks.us-west-2.amazonaws.com/id/T1";
    let doc = Arc::new(Mutex::new(
        json!({"Version": "2012-10-17", "Statement": []}),
    ));
    let d = doc.clone();
    let iam = Fake::start(move |s| {
        // ECR (JSON protocol) shares this fake: the repository of a build.
        if s.headers.get("x-amz-target").map(String::as_str)
            == Some("AmazonEC2ContainerRegistry_V20150921.CreateRepository")
        {
            let name = s.json()["repositoryName"].clone();
            return (
                200,
                vec![("content-type", "application/x-amz-json-1.1".to_owned())],
                json!({"repository": {"repositoryName": name}}).to_string(),
            );
        }
        let f = s.form();
        let xml = |b: String| (200, vec![("content-type", "text/xml".to_owned())], b);
        match f.get("Action").map(String::as_str) {
            Some("GetRole") => {
                let enc = percent_encoding::utf8_percent_encode(
                    &d.lock().unwrap().to_string(),
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                xml(format!(
                    r#"<GetRoleResponse><GetRoleResult><Role><Path>/</Path><RoleName>substratus</RoleName><RoleId>R</RoleId><Arn>{role}</Arn><CreateDate>2024-01-01T00:00:00Z</CreateDate><AssumeRolePolicyDocument>{enc}</AssumeRolePolicyDocument></Role></GetRoleResult></GetRoleResponse>"#
                ))
            }
            Some("UpdateAssumeRolePolicy") => {
                *d.lock().unwrap() = serde_json::from_str(&f["PolicyDocument"]).unwrap();
                xml("<UpdateAssumeRolePolicyResponse><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></UpdateAssumeRolePolicyResponse>".into())
            }
            _ => status(400, "unexpected"),
        }
    })
    .await;
    let cloud = aws_cloud(
        "s3://123456789012-substratus-artifacts",
        issuer,
        Some("http://127.0.0.1:9".into()),
        Some(iam.endpoint.clone()),
    );
    let op = RunningOperator::start(&ns.name, Arc::new(cloud) as Arc<dyn Cloud>).await;
    gpu_model(&c, &ns.name, "nvidia-l4").await;
    let (pod, node) = run_pod(&c, &ns.name).await;
    assert_eq!(node["karpenter.k8s.aws/instance-gpu-name"], "l4");
    // The pod ran: the namespace's claim was bound before it, once for every object.
    let pv = claimed_csi(&c, &ns.name, &pod).await;
    assert_eq!(pv["csi"]["driver"], "s3.csi.aws.com");
    assert_eq!(
        pv["csi"]["volumeAttributes"]["bucketName"],
        "123456789012-substratus-artifacts"
    );
    assert!(
        pv["mountOptions"].to_string().contains("allow-overwrite"),
        "the artifacts volume is the read-write one: {}",
        pv["mountOptions"]
    );
    mounted_by_sub_path_of_the_namespace_s_claims(&c, &ns.name, &pod).await;
    assert_eq!(
        sa_annotations(&c, &ns.name).await["eks.amazonaws.com/role-arn"],
        role
    );
    // A git build: ECR takes pushes only into repositories that exist, so the operator
    // creates the image's repository before the build Job.
    let built: Model = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": "built"},
        "spec": {"build": {"git": {"url": "https://git.invalid/model.git"}}},
    }))
    .unwrap();
    Api::<Model>::namespaced(c.clone(), &ns.name)
        .create(&PostParams::default(), &built)
        .await
        .unwrap();
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the build Job", Duration::from_secs(60), || async {
        match jobs.get_opt("built-model-bld").await {
            Ok(Some(_)) => Ok(Some(())),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let repositories: Vec<Value> = iam
        .seen()
        .iter()
        .filter(|s| s.headers.contains_key("x-amz-target"))
        .map(|s| s.json()["repositoryName"].clone())
        .collect();
    assert_eq!(
        repositories,
        [json!(format!("substratus/eks-1-model-{}__built", ns.name))]
    );
    op.stop().await;
    let updates = iam
        .seen()
        .iter()
        .filter(|s| s.form().get("Action").map(String::as_str) == Some("UpdateAssumeRolePolicy"))
        .count();
    assert_eq!(
        updates, 2,
        "one per role account: the modeller and the builder"
    );
    for account in ["modeller", "container-builder"] {
        assert!(
            doc.lock()
                .unwrap()
                .to_string()
                .contains(&format!("system:serviceaccount:{}:{account}", ns.name))
        );
    }
}

/// The AKS settings of these tests: ARM at `arm`, the operator's token in `dir`.
fn aks_settings(arm: &Fake, dir: &tempfile::TempDir) -> substratus_clouds::azure::AzureSettings {
    std::fs::write(dir.path().join("token"), "jwt").unwrap();
    substratus_clouds::azure::AzureSettings {
        storage_account: "substratusartifacts".into(),
        blob_endpoint: Some("http://127.0.0.1:9/substratusartifacts".into()),
        storage_auth: substratus_clouds::azure::StorageAuth::SharedKey("a2V5".into()),
        subscription_id: "sub".into(),
        resource_group: "rg".into(),
        identity_name: "substratus".into(),
        oidc_issuer: "https://eastus.oic.prod-aks.azure.com/t/c/".into(),
        arm_endpoint: arm.endpoint.clone(),
        token: Some(substratus_clouds::azure::token::WorkloadIdentityToken::new(
            &arm.endpoint,
            "tenant",
            "operator",
            dir.path().join("token"),
            reqwest::Client::new(),
        )),
        volumes: Default::default(),
        namespaces: None,
    }
}

#[tokio::test]
async fn azure_backend_on_aks_pools() {
    let ns = TestNamespace::new("aks");
    let c = client().await;
    let client_id = "11111111-2222-3333-4444-555555555555";
    let arm = Fake::start(|s| {
        if s.path.ends_with("/oauth2/v2.0/token") {
            return json_ok(json!({"access_token": "arm", "expires_in": 3600}));
        }
        if s.headers.get("authorization").map(String::as_str) != Some("Bearer arm") {
            return status(401, "token");
        }
        match s.method.as_str() {
            "GET" => json_ok(json!({"value": []})),
            "PUT" => json_ok(json!({"name": "x", "properties": s.json()["properties"]})),
            _ => status(400, ""),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cloud = substratus_clouds::azure::AzureCloud::new(
        CloudConfig {
            cluster_name: "aks-1".into(),
            artifact_bucket: BucketUrl::parse("az://substratus-artifacts").unwrap(),
            registry: "substratus.azurecr.io".into(),
            principal: Some(client_id.into()),
            tenancy: Default::default(),
        },
        aks_settings(&arm, &dir),
        GpuCatalog::azure(),
    )
    .unwrap();
    let op = RunningOperator::start(&ns.name, Arc::new(cloud) as Arc<dyn Cloud>).await;
    gpu_model(&c, &ns.name, "nvidia-a100").await;
    let (pod, node) = run_pod(&c, &ns.name).await;
    assert_eq!(
        node["node.kubernetes.io/instance-type"],
        "Standard_ND96asr_v4"
    );
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()["azure.workload.identity/use"],
        "true"
    );
    let pv = claimed_csi(&c, &ns.name, &pod).await;
    assert_eq!(pv["csi"]["driver"], "blob.csi.azure.com");
    assert_eq!(pv["csi"]["volumeAttributes"]["clientID"], client_id);
    mounted_by_sub_path_of_the_namespace_s_claims(&c, &ns.name, &pod).await;
    assert_eq!(
        sa_annotations(&c, &ns.name).await["azure.workload.identity/client-id"],
        client_id
    );
    op.stop().await;
    let puts = arm.seen_at("PUT", "");
    assert_eq!(puts.len(), 1, "one federated credential");
    assert_eq!(
        puts[0].json()["properties"]["subject"],
        format!("system:serviceaccount:{}:modeller", ns.name)
    );
}

/// `TENANCY=namespace` on AKS: the operator makes a managed identity per namespace before
/// planning anything of it; each namespace's accounts name their own identity's client id,
/// each Model's pod mounts an inline blob CSI volume of its namespace's folder with that
/// client id (no static volume or claim), and each identity's role assignments name only
/// its namespace — against a fake of ARM checking the documented request shapes.
#[tokio::test]
async fn azure_namespace_tenancy_gives_each_namespace_its_own_identity_and_mounts() {
    let (a, b) = (TestNamespace::new("aks-a"), TestNamespace::new("aks-b"));
    let c = client().await;
    let assignments = Arc::new(Mutex::new(Vec::<Value>::new()));
    let recorded = assignments.clone();
    let identities = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, Value>::new(),
    ));
    let arm = Fake::start(move |s| {
        if s.path.ends_with("/oauth2/v2.0/token") {
            return json_ok(json!({"access_token": "arm", "expires_in": 3600}));
        }
        if s.headers.get("authorization").map(String::as_str) != Some("Bearer arm") {
            return status(401, "token");
        }
        if s.path.contains("/roleAssignments/") {
            if s.method == "GET" {
                return status(404, "RoleAssignmentNotFound");
            }
            recorded.lock().unwrap().push(s.json());
            return json_ok(s.json());
        }
        if s.path.ends_with("/federatedIdentityCredentials") {
            return json_ok(json!({"value": []}));
        }
        if s.path.contains("/federatedIdentityCredentials/") {
            return json_ok(json!({"properties": s.json()["properties"]}));
        }
        let Some(name) = s
            .path
            .rsplit_once("/userAssignedIdentities/")
            .map(|(_, n)| n.to_owned())
        else {
            return status(404, "");
        };
        let mut all = identities.lock().unwrap();
        if s.method == "PUT" {
            let i = json!({"name": name, "tags": s.json()["tags"], "properties": {
                "clientId": format!("client-{name}"), "principalId": format!("principal-{name}")}});
            all.insert(name.clone(), i);
        }
        match all.get(&name) {
            Some(i) => json_ok(i.clone()),
            None => status(404, "ResourceNotFound"),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let settings = substratus_clouds::azure::AzureSettings {
        storage_auth: substratus_clouds::azure::StorageAuth::WorkloadIdentity,
        volumes: substratus_clouds::azure::BlobVolumes::Inline,
        namespaces: Some(substratus_clouds::azure::NamespaceSettings {
            identity_resource_group: "rg-tenants".into(),
            location: "eastus".into(),
        }),
        ..aks_settings(&arm, &dir)
    };
    let cloud: Arc<dyn Cloud> = Arc::new(
        substratus_clouds::azure::AzureCloud::new(
            CloudConfig {
                cluster_name: "aks-1".into(),
                artifact_bucket: BucketUrl::parse("az://substratus-artifacts").unwrap(),
                registry: "subx.azurecr.io/substratus".into(),
                principal: None,
                tenancy: substratus_core::cloud::Tenancy::Namespace,
            },
            settings,
            GpuCatalog::azure(),
        )
        .unwrap(),
    );
    let ops = [
        RunningOperator::start(&a.name, cloud.clone()).await,
        RunningOperator::start(&b.name, cloud.clone()).await,
    ];
    for ns in [&a.name, &b.name] {
        gpu_model(&c, ns, "nvidia-a100").await;
        let client_id = format!("client-substratus-{ns}");
        let annotations = sa_annotations(&c, ns).await;
        assert_eq!(annotations["azure.workload.identity/client-id"], client_id);
        assert_eq!(annotations["substratus.ai/identity-bound"], client_id);
        let (pod, _) = run_pod(&c, ns).await;
        let volumes: Vec<_> = pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .collect();
        assert!(
            volumes.iter().all(|v| v.persistent_volume_claim.is_none()),
            "no claim to bind"
        );
        let blob: Vec<_> = volumes
            .iter()
            .filter_map(|v| v.csi.as_ref())
            .filter(|v| v.driver == "blob.csi.azure.com")
            .map(|v| v.volume_attributes.clone().unwrap())
            .collect();
        assert!(!blob.is_empty(), "{volumes:?}");
        for attrs in blob {
            assert_eq!(attrs["clientID"], client_id);
            assert_eq!(attrs["mountWithWorkloadIdentityToken"], "true");
            assert!(
                attrs["mountOptions"].contains(&format!("--subdirectory=namespaces/{ns}/")),
                "{attrs:?}"
            );
        }
    }
    for op in ops {
        op.stop().await;
    }
    let all = assignments.lock().unwrap().clone();
    assert_eq!(all.len(), 4, "two grants per namespace, each made once");
    for ns in [&a.name, &b.name] {
        let mine: Vec<&Value> = all
            .iter()
            .filter(|g| g["properties"]["principalId"] == format!("principal-substratus-{ns}"))
            .collect();
        assert_eq!(mine.len(), 2);
        for g in mine {
            let condition = g["properties"]["condition"].as_str().unwrap();
            assert!(condition.contains(&format!("{ns}/'")), "{condition}");
            let other = if ns == &a.name { &b.name } else { &a.name };
            assert!(!condition.contains(other.as_str()), "{condition}");
        }
    }
    assert!(
        arm.seen_at("PUT", "")
            .iter()
            .filter(|s| s.path.contains("/userAssignedIdentities/"))
            .all(|s| s.path.contains("/resourceGroups/rg-tenants/")),
        "identities go to their own group"
    );
}

/// Under SSE-KMS an object's ETag is not its MD5: the stored checksum of an upload is read
/// from its bytes (an S3 fake answering as S3 does for a KMS-encrypted object).
#[tokio::test]
async fn an_upload_in_an_sse_kms_bucket_is_verified_by_reading_it() {
    use md5::Digest as _;
    let body = "the uploaded build context";
    let md5 = substratus_core::names::hex(&md5::Md5::digest(body.as_bytes()));
    // What S3 returns as the ETag of a KMS-encrypted object: 32 hex digits, not the MD5.
    let kms_etag = "\"9f1a0c5e3b2d4f60718293a4b5c6d7e8\"";
    for (sse, expect_get) in [("aws:kms", true), ("AES256", false)] {
        let s3 = Fake::start(move |s| {
            let headers = vec![
                ("etag", kms_etag.to_owned()),
                ("x-amz-server-side-encryption", sse.to_owned()),
                ("content-length", body.len().to_string()),
            ];
            match s.method.as_str() {
                "HEAD" => (200, headers, String::new()),
                "GET" => (200, headers, body.to_owned()),
                _ => status(400, "unexpected"),
            }
        })
        .await;
        let cloud = aws_cloud(
            "s3://bucket",
            "https://oidc.example",
            Some(s3.endpoint.clone()),
            None,
        );
        let stored = cloud.stored_md5("p/uploads/latest.tar.gz").await.unwrap();
        let read = !s3
            .seen_at("GET", "/bucket/p/uploads/latest.tar.gz")
            .is_empty();
        assert_eq!(read, expect_get, "{sse}: read the object: {read}");
        let want = if expect_get {
            md5.clone()
        } else {
            kms_etag.trim_matches('"').to_owned()
        };
        assert_eq!(stored.as_deref(), Some(want.as_str()), "{sse}");
    }
}
