//! The Azure backend: a SAS upload round-trips through Azurite (which checks SAS signatures
//! and Content-MD5) with the upload code `sub` runs, and `Content-MD5` is read back; tampered
//! bytes and a forged signature are refused. ARM (federated identity credentials) and the
//! Entra token exchange are local fakes checking the documented request shapes, the
//! no-duplicate rule and the 20-per-identity limit.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fake, json_ok, md5_hex, put_like_sub, status};
use serde_json::{Value, json};
use substratus_clouds::azure::token::WorkloadIdentityToken;
use substratus_clouds::azure::{AzureCloud, AzureSettings, StorageAuth};
use substratus_clouds::gpu::GpuCatalog;
use substratus_core::cloud::{BucketUrl, Cloud, CloudConfig, CloudError};
use substratus_devcluster::emulators::{AZURITE_ACCOUNT, AZURITE_KEY, Emulator};

const CLIENT_ID: &str = "00000000-1111-2222-3333-444444444444";
const ISSUER: &str = "https://eastus.oic.prod-aks.azure.com/tenant/cluster/";

fn cloud(blob: Option<String>, arm: Option<(&str, WorkloadIdentityToken)>) -> AzureCloud {
    AzureCloud::new(
        CloudConfig {
            cluster_name: "aks1".into(),
            artifact_bucket: BucketUrl::parse("az://artifacts").unwrap(),
            registry: "substratus.azurecr.io".into(),
            principal: Some(CLIENT_ID.into()),
            tenancy: Default::default(),
        },
        AzureSettings {
            storage_account: AZURITE_ACCOUNT.into(),
            blob_endpoint: blob,
            storage_auth: StorageAuth::SharedKey(AZURITE_KEY.into()),
            subscription_id: "sub-1".into(),
            resource_group: "rg-1".into(),
            identity_name: "substratus".into(),
            oidc_issuer: ISSUER.into(),
            arm_endpoint: arm.as_ref().map(|a| a.0.to_owned()).unwrap_or_default(),
            token: arm.map(|a| a.1),
            volumes: Default::default(),
            namespaces: None,
        },
        GpuCatalog::azure(),
    )
    .unwrap()
}

async fn create_container(endpoint: &str) {
    use azure_storage_blobs::prelude::ClientBuilder;
    let creds = azure_storage::StorageCredentials::access_key(AZURITE_ACCOUNT, AZURITE_KEY);
    ClientBuilder::with_location(
        azure_storage::CloudLocation::Custom {
            account: AZURITE_ACCOUNT.into(),
            uri: endpoint.into(),
        },
        creds,
    )
    .transport(substratus_clouds::azure::transport::Transport::options(
        reqwest::Client::new(),
    ))
    .container_client("artifacts")
    .create()
    .await
    .expect("container");
}

#[tokio::test]
async fn a_sas_upload_round_trips_through_azurite_and_tampering_is_refused() {
    let az = Emulator::azurite().expect("azurite");
    let endpoint = format!("{}/{AZURITE_ACCOUNT}", az.endpoint());
    create_container(&endpoint).await;
    let c = cloud(Some(endpoint), None);
    let key = "abc/uploads/latest.tar.gz";
    assert_eq!(c.stored_md5(key).await.unwrap(), None);

    let body: Vec<u8> = (0..250_000u32).map(|i| (i % 239) as u8).collect();
    let md5 = md5_hex(&body);
    let url = c
        .signed_upload_url(key, &md5, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(
        url.url.contains("sig=") && url.url.contains("sr=b"),
        "{}",
        url.url
    );
    assert!(
        url.url.contains("sp=cw"),
        "create and write only: {}",
        url.url
    );

    let mut tampered = body.clone();
    tampered[3] ^= 1;
    let err = put_like_sub(&url.url, &tampered, &md5).await.unwrap_err();
    assert!(err.contains("400") || err.contains("Md5Mismatch"), "{err}");
    let forged = url.url.replace("sig=", "sig=AAAA");
    let err = put_like_sub(&forged, &body, &md5).await.unwrap_err();
    assert!(err.contains("403"), "{err}");
    assert_eq!(
        c.stored_md5(key).await.unwrap(),
        None,
        "nothing refused was stored"
    );

    put_like_sub(&url.url, &body, &md5).await.expect("PUT");
    assert_eq!(c.stored_md5(key).await.unwrap(), Some(md5.clone()));
    // A SAS cannot bind the md5: another archive can be put, and reads back as itself, so
    // the operator's comparison (UploadMismatch) is what refuses it.
    let other = b"other archive".to_vec();
    put_like_sub(&url.url, &other, &md5_hex(&other))
        .await
        .unwrap();
    assert_eq!(c.stored_md5(key).await.unwrap(), Some(md5_hex(&other)));
}

/// The operator's workload identity: a projected token file, exchanged at `endpoint`.
fn operator_token(endpoint: &str) -> (tempfile::TempDir, WorkloadIdentityToken) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "projected.sa.jwt\n").unwrap();
    let token = WorkloadIdentityToken::new(
        endpoint,
        "tenant-1",
        "operator-client",
        dir.path().join("token"),
        reqwest::Client::new(),
    );
    (dir, token)
}

struct Arm {
    fake: Fake,
    creds: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
    token: WorkloadIdentityToken,
}

async fn arm(existing: Vec<Value>) -> Arm {
    let creds = Arc::new(Mutex::new(existing));
    let c = creds.clone();
    let fake = Fake::start(move |s| {
        if s.method == "POST" && s.path == "/tenant-1/oauth2/v2.0/token" {
            let f = s.form();
            let ok = f.get("grant_type").map(String::as_str) == Some("client_credentials")
                && f.get("client_id").map(String::as_str) == Some("operator-client")
                && f.get("scope").map(String::as_str) == Some("https://management.azure.com/.default")
                && f.get("client_assertion_type").map(String::as_str)
                    == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && f.get("client_assertion").map(String::as_str) == Some("projected.sa.jwt");
            if !ok {
                return status(400, &format!("bad token request {f:?}"));
            }
            return json_ok(json!({"token_type": "Bearer", "expires_in": 3600, "access_token": "arm-token"}));
        }
        if s.headers.get("authorization").map(String::as_str) != Some("Bearer arm-token") {
            return status(401, "no token");
        }
        if s.query.get("api-version").map(String::as_str) != Some("2023-01-31") {
            return status(400, "api-version");
        }
        let base = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/substratus/federatedIdentityCredentials";
        if s.method == "GET" && s.path == base {
            return json_ok(json!({"value": c.lock().unwrap().clone()}));
        }
        if s.method == "PUT" && s.path.starts_with(&format!("{base}/")) {
            let b = s.json();
            assert_eq!(b["properties"]["audiences"], json!(["api://AzureADTokenExchange"]));
            let name = s.path.rsplit('/').next().unwrap().to_owned();
            let x = json!({"name": name, "properties": b["properties"]});
            c.lock().unwrap().push(x.clone());
            return json_ok(x);
        }
        status(404, "no such API in this fake")
    })
    .await;
    let (dir, token) = operator_token(&fake.endpoint);
    Arm {
        fake,
        creds,
        _dir: dir,
        token,
    }
}

#[tokio::test]
async fn a_federated_credential_is_created_once_per_service_account() {
    let a = arm(vec![]).await;
    let c = cloud(None, Some((&a.fake.endpoint.clone(), a.token.clone())));
    assert_eq!(
        c.bind_identity("team-a", "modeller")
            .await
            .unwrap()
            .as_deref(),
        Some(CLIENT_ID)
    );
    c.bind_identity("team-a", "modeller").await.unwrap();
    c.bind_identity("team-b", "modeller").await.unwrap();
    assert_eq!(
        a.fake.seen_at("PUT", "").len(),
        2,
        "the second bind of team-a wrote nothing"
    );
    let creds = a.creds.lock().unwrap().clone();
    assert_eq!(creds[0]["properties"]["issuer"], ISSUER);
    assert_eq!(
        creds[0]["properties"]["subject"],
        "system:serviceaccount:team-a:modeller"
    );
    assert_eq!(
        creds[1]["properties"]["subject"],
        "system:serviceaccount:team-b:modeller"
    );
    // One token exchange served all the ARM calls.
    assert_eq!(a.fake.seen_at("POST", "/oauth2/v2.0/token").len(), 1);
}

#[tokio::test]
async fn the_twenty_first_service_account_is_refused_with_the_limit_named() {
    let full: Vec<Value> = (0..20)
        .map(|i| json!({"name": format!("c{i}"), "properties": {"issuer": ISSUER,
            "subject": format!("system:serviceaccount:ns{i}:modeller"), "audiences": ["api://AzureADTokenExchange"]}}))
        .collect();
    let a = arm(full).await;
    let c = cloud(None, Some((&a.fake.endpoint.clone(), a.token.clone())));
    // Bound already: fine even at the limit.
    c.bind_identity("ns3", "modeller").await.unwrap();
    let err = c.bind_identity("new-team", "modeller").await.unwrap_err();
    assert!(matches!(err, CloudError::Permanent { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("20") && text.contains("new-team"), "{text}");
    assert!(a.fake.seen_at("PUT", "").is_empty());
}

#[tokio::test]
async fn a_folder_is_copied_blob_by_blob_inside_azurite() {
    let az = Emulator::azurite().expect("azurite");
    let endpoint = format!("{}/{AZURITE_ACCOUNT}", az.endpoint());
    create_container(&endpoint).await;
    common::copies_exactly_a_folder(&cloud(Some(endpoint), None)).await;
}

/// What a fake of ARM keeps for namespace tenancy: managed identities, their federated
/// credentials and role assignments, by path.
#[derive(Default)]
struct ArmState {
    identities: std::collections::BTreeMap<String, Value>,
    creds: std::collections::BTreeMap<String, Vec<Value>>,
    assignments: std::collections::BTreeMap<String, Value>,
    /// Principals whose first role assignment is answered `PrincipalNotFound`, as ARM does
    /// while the directory has not replicated a new identity.
    unreplicated: std::collections::BTreeSet<String>,
    /// Principals that hold the role through an assignment made by someone else.
    assigned_elsewhere: std::collections::BTreeSet<String>,
}

const IDENTITIES: &str = "/subscriptions/sub-1/resourceGroups/rg-ids/providers/Microsoft.ManagedIdentity/userAssignedIdentities/";

async fn tenant_arm(
    state: Arc<Mutex<ArmState>>,
) -> (Fake, tempfile::TempDir, WorkloadIdentityToken) {
    let fake = Fake::start(move |s| {
        if s.method == "POST" && s.path.ends_with("/oauth2/v2.0/token") {
            return json_ok(
                json!({"token_type": "Bearer", "expires_in": 3600, "access_token": "arm-token"}),
            );
        }
        if s.headers.get("authorization").map(String::as_str) != Some("Bearer arm-token") {
            return status(401, "no token");
        }
        let api = s.query.get("api-version").cloned().unwrap_or_default();
        let mut st = state.lock().unwrap();
        if s.path
            .contains("/providers/Microsoft.Authorization/roleAssignments/")
        {
            if api != "2022-04-01" {
                return status(400, "api-version");
            }
            if s.method == "GET" {
                return match st.assignments.get(&s.path) {
                    Some(a) => json_ok(a.clone()),
                    None => status(404, "RoleAssignmentNotFound"),
                };
            }
            let p = s.json()["properties"].clone();
            for field in ["roleDefinitionId", "principalId", "condition"] {
                if !p[field].is_string() {
                    return status(400, &format!("InvalidRoleAssignment: no {field}"));
                }
            }
            if p["conditionVersion"] != "2.0" || p["principalType"] != "ServicePrincipal" {
                return status(
                    400,
                    "InvalidRoleAssignment: condition version or principal type",
                );
            }
            let principal = p["principalId"].as_str().unwrap().to_owned();
            if st.assigned_elsewhere.contains(&principal) {
                return status(409, r#"{"error":{"code":"RoleAssignmentExists"}}"#);
            }
            if st.unreplicated.remove(&principal) {
                return status(400, r#"{"error":{"code":"PrincipalNotFound"}}"#);
            }
            let a = json!({"name": s.path.rsplit('/').next(), "properties": p});
            st.assignments.insert(s.path.clone(), a.clone());
            return json_ok(a);
        }
        if api != "2023-01-31" {
            return status(400, "api-version");
        }
        if let Some(identity) = s.path.strip_suffix("/federatedIdentityCredentials") {
            return json_ok(json!({"value": st.creds.get(identity).cloned().unwrap_or_default()}));
        }
        if let Some((identity, name)) = s.path.split_once("/federatedIdentityCredentials/") {
            let c = json!({"name": name, "properties": s.json()["properties"]});
            st.creds
                .entry(identity.to_owned())
                .or_default()
                .push(c.clone());
            return json_ok(c);
        }
        if let Some(name) = s.path.strip_prefix(IDENTITIES) {
            if s.method == "GET" {
                return match st.identities.get(name) {
                    Some(i) => json_ok(i.clone()),
                    None => status(404, "ResourceNotFound"),
                };
            }
            let b = s.json();
            if b["location"] != "eastus" {
                return status(400, "LocationRequired");
            }
            let i = json!({"name": name, "location": "eastus", "tags": b["tags"], "properties": {
                "clientId": format!("client-{name}"), "principalId": format!("principal-{name}"),
                "tenantId": "tenant-1"}});
            st.identities.insert(name.to_owned(), i.clone());
            return json_ok(i);
        }
        status(404, "no such API in this fake")
    })
    .await;
    let (dir, token) = operator_token(&fake.endpoint);
    (fake, dir, token)
}

fn tenant_cloud(endpoint: &str, token: WorkloadIdentityToken) -> AzureCloud {
    AzureCloud::new(
        CloudConfig {
            cluster_name: "aks1".into(),
            artifact_bucket: BucketUrl::parse("az://artifacts").unwrap(),
            registry: "subx.azurecr.io/substratus".into(),
            principal: None,
            tenancy: substratus_core::cloud::Tenancy::Namespace,
        },
        AzureSettings {
            storage_account: "acct".into(),
            blob_endpoint: Some("http://127.0.0.1:9/acct".into()),
            storage_auth: StorageAuth::WorkloadIdentity,
            subscription_id: "sub-1".into(),
            resource_group: "rg-1".into(),
            identity_name: "substratus".into(),
            oidc_issuer: ISSUER.into(),
            arm_endpoint: endpoint.into(),
            token: Some(token),
            volumes: substratus_clouds::azure::BlobVolumes::Inline,
            namespaces: Some(substratus_clouds::azure::NamespaceSettings {
                identity_resource_group: "rg-ids".into(),
                location: "eastus".into(),
            }),
        },
        GpuCatalog::azure(),
    )
    .unwrap()
}

fn prefix_in(c: &AzureCloud, namespace: &str) -> substratus_core::cloud::ArtifactPrefix {
    substratus_core::cloud::ArtifactPrefix {
        kind: substratus_core::names::Kind::Model,
        namespace: namespace.into(),
        name: "m".into(),
        hash: "0123abcd".into(),
        url: c.config().namespace_folder(namespace).join("0123abcd"),
    }
}

fn attributes(
    v: &k8s_openapi::api::core::v1::Volume,
) -> std::collections::BTreeMap<String, String> {
    v.csi.as_ref().unwrap().volume_attributes.clone().unwrap()
}

/// `TENANCY=namespace` on AKS: each namespace gets a managed identity of its own (created
/// with the operator's tags in the identities' group), federated with its accounts only and
/// granted, under ABAC conditions, its folder of the container and its repositories of the
/// registry; pods mount with their namespace's client id; nothing is written twice.
#[tokio::test]
async fn each_namespace_gets_its_own_identity_granted_only_its_folder_and_repositories() {
    use substratus_core::cloud::Access;
    use substratus_core::names::Role;
    let state = Arc::new(Mutex::new(ArmState::default()));
    state
        .lock()
        .unwrap()
        .unreplicated
        .insert("principal-substratus-team-b".into());
    let (fake, _dir, token) = tenant_arm(state.clone()).await;
    let c = tenant_cloud(&fake.endpoint, token.clone());
    let prefix = prefix_in(&c, "team-a");

    // Nothing of a namespace is planned before its identity exists.
    let early = c
        .bucket_volume(&prefix.artifacts(), Access::ReadOnly)
        .unwrap_err();
    assert!(matches!(early, CloudError::Transient(_)), "{early}");
    assert!(
        c.service_account_annotations("team-a", Role::Modeller)
            .is_err()
    );

    c.prepare_namespace("team-a").await.unwrap();
    {
        let st = state.lock().unwrap();
        let a = &st.identities["substratus-team-a"];
        assert_eq!(a["tags"]["managed-by"], "substratus");
        assert_eq!(a["tags"]["substratus-namespace"], "team-a");
        assert_eq!(st.assignments.len(), 2);
        let conditions: Vec<(String, String)> = st
            .assignments
            .iter()
            .map(|(path, a)| {
                assert_eq!(
                    a["properties"]["principalId"],
                    "principal-substratus-team-a"
                );
                (
                    path.clone(),
                    a["properties"]["condition"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let blob = conditions
            .iter()
            .find(|(p, _)| p.contains("/containers/artifacts/"))
            .unwrap();
        assert!(blob.0.starts_with("/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Storage/storageAccounts/acct/"));
        assert_eq!(
            blob.1
                .matches("StringStartsWith 'namespaces/team-a/'")
                .count(),
            2,
            "{}",
            blob.1
        );
        let acr = conditions
            .iter()
            .find(|(p, _)| p.contains("/registries/subx/"))
            .unwrap();
        assert!(
            acr.1
                .contains("StringStartsWithIgnoreCase 'substratus/team-a/'"),
            "{}",
            acr.1
        );
    }
    let after_a = fake.seen().len();
    c.prepare_namespace("team-a").await.unwrap();
    assert_eq!(
        fake.seen().len(),
        after_a,
        "a prepared namespace asks ARM nothing"
    );

    // Its accounts are federated with its identity, once each.
    let bound = c.bind_identity("team-a", "modeller").await.unwrap();
    assert_eq!(bound.as_deref(), Some("client-substratus-team-a"));
    assert_eq!(bound, c.workload_principal("team-a"));
    c.bind_identity("team-a", "modeller").await.unwrap();
    c.bind_identity("team-a", "container-builder")
        .await
        .unwrap();
    assert_eq!(
        fake.seen_at("PUT", "")
            .iter()
            .filter(|s| s.path.contains("federatedIdentityCredentials"))
            .count(),
        2
    );

    // Team B: its first role assignment meets an identity the directory does not know yet,
    // which is retried; then it has an identity of its own.
    let err = c.prepare_namespace("team-b").await.unwrap_err();
    assert!(matches!(err, CloudError::Transient(_)), "{err}");
    c.prepare_namespace("team-b").await.unwrap();
    c.bind_identity("team-b", "modeller").await.unwrap();
    assert_ne!(
        c.workload_principal("team-a"),
        c.workload_principal("team-b")
    );
    {
        let st = state.lock().unwrap();
        let subjects = |name: &str| -> Vec<String> {
            st.creds[&format!("{IDENTITIES}{name}")]
                .iter()
                .map(|c| c["properties"]["subject"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            subjects("substratus-team-a"),
            [
                "system:serviceaccount:team-a:modeller",
                "system:serviceaccount:team-a:container-builder"
            ]
        );
        assert_eq!(
            subjects("substratus-team-b"),
            ["system:serviceaccount:team-b:modeller"]
        );
        let of_b: Vec<&Value> = st
            .assignments
            .values()
            .filter(|a| a["properties"]["principalId"] == "principal-substratus-team-b")
            .collect();
        assert_eq!(of_b.len(), 2);
        assert!(of_b.iter().all(|a| {
            let cond = a["properties"]["condition"].as_str().unwrap();
            !cond.contains("team-a") && cond.contains("team-b/'")
        }));
    }

    // Accounts, volumes and images name the namespace's own identity and places.
    assert_eq!(
        c.service_account_annotations("team-a", Role::Modeller)
            .unwrap()["azure.workload.identity/client-id"],
        "client-substratus-team-a"
    );
    let v = c
        .bucket_volume(&prefix.artifacts(), Access::ReadOnly)
        .unwrap()
        .volume;
    let attrs = attributes(&v);
    assert_eq!(v.csi.as_ref().unwrap().driver, "blob.csi.azure.com");
    assert_eq!(v.csi.as_ref().unwrap().read_only, Some(true));
    assert_eq!(attrs["clientID"], "client-substratus-team-a");
    assert_eq!(attrs["mountWithWorkloadIdentityToken"], "true");
    assert_eq!(attrs["containerName"], "artifacts");
    assert_eq!(
        attrs["mountOptions"],
        "-o allow_other --virtual-directory=true --subdirectory=namespaces/team-a/0123abcd/artifacts/ --read-only=true"
    );
    let rw = c
        .bucket_volume(&prefix.artifacts(), Access::ReadWrite)
        .unwrap()
        .volume;
    assert!(!attributes(&rw)["mountOptions"].contains("read-only"));
    assert!(
        c.prefix_objects(&prefix).is_empty(),
        "no volume or claim to bind"
    );
    let upload = c.upload_context(&prefix).unwrap();
    assert!(upload.objects.is_empty());
    let (mount, _) = upload.mount.unwrap();
    assert!(
        attributes(&mount)["mountOptions"]
            .contains("--subdirectory=namespaces/team-a/0123abcd/uploads/")
    );
    let b = c
        .bucket_volume(&prefix_in(&c, "team-b").artifacts(), Access::ReadOnly)
        .unwrap()
        .volume;
    assert_eq!(attributes(&b)["clientID"], "client-substratus-team-b");
    assert_eq!(
        c.image_url(substratus_core::names::Kind::Model, "team-a", "m", "t"),
        "subx.azurecr.io/substratus/team-a/aks1-model-team-a__m:t"
    );

    // After a restart the identity and its grants are read, not written again.
    let puts = fake.seen_at("PUT", "").len();
    let again = tenant_cloud(&fake.endpoint, token);
    again.prepare_namespace("team-a").await.unwrap();
    assert_eq!(fake.seen_at("PUT", "").len(), puts);
    assert_eq!(
        again.workload_principal("team-a").as_deref(),
        Some("client-substratus-team-a")
    );
}

/// An identity of the namespace's name that the operator did not make, and a role the
/// identity holds through someone else's assignment, are refused, naming what to do.
#[tokio::test]
async fn a_foreign_identity_or_assignment_is_never_taken_over() {
    let state = Arc::new(Mutex::new(ArmState::default()));
    state.lock().unwrap().identities.insert(
        "substratus-taken".into(),
        json!({"name": "substratus-taken", "tags": {}, "properties": {"clientId": "c", "principalId": "p"}}),
    );
    state
        .lock()
        .unwrap()
        .assigned_elsewhere
        .insert("principal-substratus-dup".into());
    let (fake, _dir, token) = tenant_arm(state.clone()).await;
    let c = tenant_cloud(&fake.endpoint, token);
    let err = c.prepare_namespace("taken").await.unwrap_err();
    assert!(matches!(err, CloudError::Permanent { .. }), "{err}");
    assert!(err.to_string().contains("never taken over"), "{err}");
    assert!(c.bind_identity("taken", "modeller").await.is_err());
    assert!(
        state.lock().unwrap().creds.is_empty(),
        "no credential on it"
    );
    let err = c.prepare_namespace("dup").await.unwrap_err();
    assert!(matches!(err, CloudError::Permanent { .. }), "{err}");
    assert!(err.to_string().contains("did not make"), "{err}");
}
