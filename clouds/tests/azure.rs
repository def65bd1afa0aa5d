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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "projected.sa.jwt\n").unwrap();
    let token = WorkloadIdentityToken::new(
        &fake.endpoint,
        "tenant-1",
        "operator-client",
        dir.path().join("token"),
        reqwest::Client::new(),
    );
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
