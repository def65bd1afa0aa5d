//! The GCP backend: signed uploads round-trip through fake-gcs-server with the upload code
//! `sub` runs and the md5 is read back; the signed URL is checked against Google's documented
//! V4 algorithm with the public half of the key the (fake) IAM `signBlob` signed with; the
//! Workload Identity binding goes through get/set IAM policy with an etag conflict, and
//! makes no write when the member is bound already.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::KeyPair as _;
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, UnparsedPublicKey};
use base64::Engine;
use common::{Fake, json_ok, md5_hex, put_like_sub, status};
use serde_json::{Value, json};
use substratus_clouds::gcp::{GcpCloud, GcpSettings};
use substratus_clouds::gpu::GpuCatalog;
use substratus_core::cloud::{BucketUrl, Cloud, CloudConfig, Tenancy};
use substratus_devcluster::emulators::Emulator;

const GSA: &str = "substratus@proj-1.iam.gserviceaccount.com";
const TOKEN: &str = "ya29.test-token";

/// The Google APIs no local server implements: metadata (tokens), IAM Credentials
/// (`signBlob`, with a real RSA key) and IAM (a service account's policy).
struct Google {
    fake: Fake,
    key: Arc<KeyPair>,
    policy: Arc<Mutex<Value>>,
}

impl Google {
    /// A Google whose every answer comes from `fake` (no key or policy of its own in use).
    fn answering(fake: Fake) -> Google {
        Google {
            fake,
            key: Arc::new(KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap()),
            policy: Arc::new(Mutex::new(json!({}))),
        }
    }
}

async fn google(conflicts: usize) -> Google {
    let key = Arc::new(KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap());
    let policy = Arc::new(Mutex::new(json!({"version": 1, "etag": "e0", "bindings": [
        {"role": "roles/iam.serviceAccountTokenCreator", "members": ["user:admin@example.com"]},
    ]})));
    let conflicts = Arc::new(Mutex::new(conflicts));
    let (k, p) = (key.clone(), policy.clone());
    let fake = Fake::start(move |s| {
        let b64 = base64::engine::general_purpose::STANDARD;
        if s.path.starts_with("/computeMetadata/") {
            if s.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
                return status(403, "Missing Metadata-Flavor:Google header");
            }
            return match s.path.as_str() {
                "/computeMetadata/v1/instance/service-accounts/default/token" => json_ok(
                    json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
                ),
                _ => status(404, "not found"),
            };
        }
        if s.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}"))
        {
            return status(401, "no token");
        }
        if s.method == "POST" && s.path == format!("/v1/projects/-/serviceAccounts/{GSA}:signBlob")
        {
            let payload = b64.decode(s.json()["payload"].as_str().unwrap_or("")).unwrap();
            let mut sig = vec![0; k.public_modulus_len()];
            k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &payload, &mut sig)
                .unwrap();
            return json_ok(json!({"keyId": "k1", "signedBlob": b64.encode(sig)}));
        }
        let resource = format!("/v1/projects/proj-1/serviceAccounts/{GSA}");
        if s.method == "POST" && s.path == format!("{resource}:getIamPolicy") {
            return json_ok(p.lock().unwrap().clone());
        }
        if s.method == "POST" && s.path == format!("{resource}:setIamPolicy") {
            let mut current = p.lock().unwrap();
            let mut left = conflicts.lock().unwrap();
            if *left > 0 {
                // Another writer got in first: the policy and its etag change.
                *left -= 1;
                current["bindings"].as_array_mut().unwrap().push(
                    json!({"role": "roles/viewer", "members": [format!("user:other{left}@example.com")]}),
                );
                current["etag"] = json!(format!("e-other{left}"));
            }
            let sent = s.json()["policy"].clone();
            if sent["etag"] != current["etag"] {
                return status(409, r#"{"error":{"code":409,"status":"ABORTED","message":"There were concurrent policy changes."}}"#);
            }
            let mut next = sent;
            next["etag"] = json!(format!("{}+", current["etag"].as_str().unwrap()));
            *current = next.clone();
            return json_ok(next);
        }
        status(404, "no such API in this fake")
    })
    .await;
    Google { fake, key, policy }
}

fn cloud(google: &Google, storage: &str) -> GcpCloud {
    GcpCloud::new(
        CloudConfig {
            cluster_name: "c1".into(),
            artifact_bucket: BucketUrl::parse("gs://artifacts").unwrap(),
            registry: "us-central1-docker.pkg.dev/proj-1/substratus".into(),
            principal: Some(GSA.into()),
            tenancy: Default::default(),
        },
        GcpSettings {
            project: "proj-1".into(),
            storage_endpoint: storage.into(),
            signed_url_endpoint: None,
            iam_endpoint: google.fake.endpoint.clone(),
            iam_credentials_endpoint: google.fake.endpoint.clone(),
            metadata_endpoint: google.fake.endpoint.clone(),
            artifact_registry_endpoint: "http://127.0.0.1:9".into(),
            project_number: None,
        },
        GpuCatalog::gcp(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_signed_upload_round_trips_through_fake_gcs_and_its_md5_is_read_back() {
    let gcs = Emulator::fake_gcs("artifacts").expect("fake-gcs-server");
    let g = google(0).await;
    let c = cloud(&g, &gcs.endpoint());
    let key = "abc123/uploads/latest.tar.gz";
    assert_eq!(c.stored_md5(key).await.unwrap(), None, "nothing stored yet");

    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let md5 = md5_hex(&body);
    let url = c
        .signed_upload_url(key, &md5, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(
        url.url.starts_with(&format!(
            "{}/artifacts/abc123/uploads/latest.tar.gz?",
            gcs.endpoint()
        )),
        "{}",
        url.url
    );
    put_like_sub(&url.url, &body, &md5).await.expect("PUT");
    assert_eq!(c.stored_md5(key).await.unwrap(), Some(md5.clone()));

    // A different archive under the same key reads back as a different md5.
    let other = b"another archive".to_vec();
    let url = c
        .signed_upload_url(key, &md5_hex(&other), Duration::from_secs(300))
        .await
        .unwrap();
    put_like_sub(&url.url, &other, &md5_hex(&other))
        .await
        .unwrap();
    assert_eq!(c.stored_md5(key).await.unwrap(), Some(md5_hex(&other)));

    // Every storage call carried the metadata server's token; signing went through signBlob.
    assert!(!g.fake.seen_at("POST", ":signBlob").is_empty());
    assert!(g.fake.seen_at("GET", "/token").len() == 1, "token cached");
}

/// Rebuilds the canonical request and string-to-sign as Google documents them
/// (cloud.google.com/storage/docs/authentication/signatures) and checks the signature.
#[tokio::test]
async fn the_signed_url_is_a_v4_signature_over_host_and_content_md5() {
    let g = google(0).await;
    let c = cloud(&g, "https://storage.googleapis.com");
    let md5 = "9e107d9d372bb6826bd81d3542a419d6";
    let signed = c
        .signed_upload_url("h/uploads/latest.tar.gz", md5, Duration::from_secs(600))
        .await
        .unwrap();
    let (base, query) = signed.url.split_once('?').unwrap();
    assert_eq!(
        base,
        "https://storage.googleapis.com/artifacts/h/uploads/latest.tar.gz"
    );
    let params: Vec<(String, String)> = query
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let get = |k: &str| {
        let v = &params.iter().find(|(n, _)| n == k).unwrap().1;
        percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .unwrap()
            .into_owned()
    };
    assert_eq!(get("X-Goog-Algorithm"), "GOOG4-RSA-SHA256");
    assert_eq!(get("X-Goog-Expires"), "600");
    assert_eq!(get("X-Goog-SignedHeaders"), "content-md5;host");
    let date = get("X-Goog-Date");
    let scope = format!("{}/auto/storage/goog4_request", &date[..8]);
    assert_eq!(get("X-Goog-Credential"), format!("{GSA}/{scope}"));

    // Canonical query: every parameter but the signature, sorted, as sent.
    let mut canonical: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "X-Goog-Signature")
        .collect();
    canonical.sort();
    let canonical_query: Vec<String> = canonical.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let content_md5 = substratus_clouds::checksum::md5_base64(md5).unwrap();
    let canonical_request = [
        "PUT".to_owned(),
        "/artifacts/h/uploads/latest.tar.gz".to_owned(),
        canonical_query.join("&"),
        format!("content-md5:{content_md5}\nhost:storage.googleapis.com\n"),
        "content-md5;host".to_owned(),
        "UNSIGNED-PAYLOAD".to_owned(),
    ]
    .join("\n");
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical_request.as_bytes());
    let string_to_sign = format!(
        "GOOG4-RSA-SHA256\n{date}\n{scope}\n{}",
        substratus_core::names::hex(hash.as_ref())
    );
    let signature: Vec<u8> = (0..get("X-Goog-Signature").len() / 2)
        .map(|i| u8::from_str_radix(&get("X-Goog-Signature")[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, g.key.public_key().as_ref())
        .verify(string_to_sign.as_bytes(), &signature)
        .expect("the signature verifies over the documented string-to-sign");
    // The signature binds the md5: the same request with another Content-MD5 does not verify.
    let tampered = string_to_sign.replace(
        &substratus_core::names::hex(hash.as_ref()),
        &substratus_core::names::hex(
            aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                canonical_request
                    .replace(&content_md5, "1B2M2Y8AsgTpgAmY7PhCfg==")
                    .as_bytes(),
            )
            .as_ref(),
        ),
    );
    assert!(
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, g.key.public_key().as_ref())
            .verify(tampered.as_bytes(), &signature)
            .is_err()
    );
}

#[tokio::test]
async fn workload_identity_binds_once_across_an_etag_conflict() {
    let g = google(1).await;
    let c = cloud(&g, "http://127.0.0.1:9");
    let bound = c.bind_identity("team-a", "modeller").await.unwrap();
    assert_eq!(bound.as_deref(), Some(GSA));
    let sets = g.fake.seen_at("POST", ":setIamPolicy");
    assert_eq!(sets.len(), 2, "one set refused by the etag, one accepted");
    assert_eq!(
        g.fake.seen_at("POST", ":getIamPolicy").len(),
        2,
        "read again after the conflict"
    );
    let policy = g.policy.lock().unwrap().clone();
    let member = "serviceAccount:proj-1.svc.id.goog[team-a/modeller]";
    let wi: Vec<&Value> = policy["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["role"] == "roles/iam.workloadIdentityUser")
        .collect();
    assert_eq!(wi.len(), 1);
    assert_eq!(wi[0]["members"], json!([member]));
    // The other writer's binding and the existing one survived.
    assert!(
        policy["bindings"]
            .to_string()
            .contains("user:other0@example.com")
    );
    assert!(
        policy["bindings"]
            .to_string()
            .contains("user:admin@example.com")
    );

    // Bound already: no write; another namespace is added beside it.
    c.bind_identity("team-a", "modeller").await.unwrap();
    assert_eq!(g.fake.seen_at("POST", ":setIamPolicy").len(), 2);
    c.bind_identity("team-b", "modeller").await.unwrap();
    let policy = g.policy.lock().unwrap().clone();
    let members = policy["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["role"] == "roles/iam.workloadIdentityUser")
        .unwrap()["members"]
        .clone();
    assert_eq!(
        members,
        json!([member, "serviceAccount:proj-1.svc.id.goog[team-b/modeller]"])
    );
}

#[tokio::test]
async fn a_refused_policy_read_is_a_permanent_error_naming_the_call() {
    let fake = Fake::start(|s| {
        if s.path.ends_with("/token") {
            return json_ok(json!({"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}));
        }
        status(403, r#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getIamPolicy' denied"}}"#)
    })
    .await;
    let g = Google::answering(fake);
    let c = cloud(&g, "http://127.0.0.1:9");
    let err = c.bind_identity("ns", "modeller").await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, substratus_core::cloud::CloudError::Permanent { .. }),
        "{text}"
    );
    assert!(
        text.contains("IAM policy") && text.contains("403") && text.contains("getIamPolicy"),
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_metadata_token_is_permanent_and_the_next_call_asks_again() {
    // The GKE metadata server answers 403 while a Workload Identity binding propagates; the
    // token source must not stay failed once the binding exists.
    let refusals = Arc::new(Mutex::new(1usize));
    let r = refusals.clone();
    let fake = Fake::start(move |s| {
        if s.path.ends_with("/token") {
            let mut left = r.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return status(403, "Unable to generate access token; IAM returned 403");
            }
            return json_ok(
                json!({"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
            );
        }
        if s.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
            return status(401, "no token");
        }
        json_ok(json!({"version": 1, "etag": "e0", "bindings": []}))
    })
    .await;
    let g = Google::answering(fake);
    let c = cloud(&g, "http://127.0.0.1:9");
    let err = c.bind_identity("ns", "modeller").await.unwrap_err();
    assert!(
        matches!(err, substratus_core::cloud::CloudError::Permanent { .. })
            && err.to_string().contains("IAM returned 403"),
        "{err}"
    );
    // The binding now exists: the next reconcile gets a token and reaches the IAM API.
    c.bind_identity("ns", "modeller").await.unwrap();
    assert_eq!(g.fake.seen_at("GET", "/token").len(), 2);
    assert!(!g.fake.seen_at("POST", ":getIamPolicy").is_empty());
}

/// Google's bucket and Artifact Registry IAM APIs, for namespace tenancy: the bucket's policy
/// (one etag conflict first, answered 412 as Cloud Storage does) and repositories with theirs.
struct Tenants {
    fake: Fake,
    bucket: Arc<Mutex<Value>>,
    repositories: Arc<Mutex<BTreeMap<String, Value>>>,
}

const REPOSITORIES: &str = "/v1/projects/proj-1/locations/us-central1/repositories";

async fn tenants() -> Tenants {
    let bucket = Arc::new(Mutex::new(
        json!({"version": 1, "etag": "CAE=", "bindings": [
            {"role": "roles/storage.admin", "members": ["serviceAccount:operator@proj-1.iam.gserviceaccount.com"]},
        ]}),
    ));
    let repositories = Arc::new(Mutex::new(BTreeMap::<String, Value>::new()));
    let conflict = Arc::new(Mutex::new(true));
    let (b, r) = (bucket.clone(), repositories.clone());
    let fake = Fake::start(move |s| {
        if s.path == "/computeMetadata/v1/instance/service-accounts/default/token" {
            return json_ok(
                json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            );
        }
        if s.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
            return status(401, "no token");
        }
        if s.path == "/storage/v1/b/artifacts/iam" {
            if s.method == "GET" {
                // Conditions are only returned (and kept) at version 3.
                assert_eq!(
                    s.query
                        .get("optionsRequestedPolicyVersion")
                        .map(String::as_str),
                    Some("3")
                );
                return json_ok(b.lock().unwrap().clone());
            }
            assert_eq!(s.method, "PUT");
            let mut current = b.lock().unwrap();
            if std::mem::take(&mut *conflict.lock().unwrap()) {
                current["etag"] = json!("CAI=");
            }
            let sent = s.json();
            if sent["etag"] != current["etag"] {
                return status(
                    412,
                    r#"{"error":{"code":412,"message":"Precondition Failed"}}"#,
                );
            }
            let mut next = sent;
            next["etag"] = json!(format!("{}+", current["etag"].as_str().unwrap()));
            *current = next.clone();
            return json_ok(next);
        }
        if s.method == "POST" && s.path == REPOSITORIES {
            let id = s.query.get("repositoryId").cloned().unwrap_or_default();
            assert_eq!(s.json()["format"], "DOCKER");
            let mut repos = r.lock().unwrap();
            if repos.contains_key(&id) {
                return status(409, "ALREADY_EXISTS");
            }
            repos.insert(id, json!({"etag": "BwE="}));
            return json_ok(json!({"name": "operations/1", "done": false}));
        }
        if let Some(rest) = s.path.strip_prefix(&format!("{REPOSITORIES}/")) {
            let (id, call) = rest.split_once(':').unwrap_or((rest, ""));
            let mut repos = r.lock().unwrap();
            let Some(policy) = repos.get_mut(id) else {
                return status(404, "NOT_FOUND");
            };
            return match (s.method.as_str(), call) {
                ("GET", "") => json_ok(json!({"name": id, "format": "DOCKER"})),
                ("GET", "getIamPolicy") => json_ok(policy.clone()),
                ("POST", "setIamPolicy") => {
                    let mut next = s.json()["policy"].clone();
                    if next["etag"] != policy["etag"] {
                        return status(409, "ABORTED");
                    }
                    next["etag"] = json!("BwF=");
                    *policy = next.clone();
                    json_ok(next)
                }
                _ => status(404, "no such call"),
            };
        }
        status(404, "no such API in this fake")
    })
    .await;
    Tenants {
        fake,
        bucket,
        repositories,
    }
}

fn tenant_cloud(t: &Tenants, project_number: Option<&str>) -> Result<GcpCloud, String> {
    let mut settings = GcpSettings::public("proj-1");
    settings.storage_endpoint = t.fake.endpoint.clone();
    settings.metadata_endpoint = t.fake.endpoint.clone();
    settings.iam_endpoint = t.fake.endpoint.clone();
    settings.artifact_registry_endpoint = t.fake.endpoint.clone();
    settings.project_number = project_number.map(str::to_owned);
    GcpCloud::new(
        CloudConfig {
            cluster_name: "c1".into(),
            artifact_bucket: BucketUrl::parse("gs://artifacts").unwrap(),
            registry: "us-central1-docker.pkg.dev/proj-1/substratus".into(),
            principal: Some(GSA.into()),
            tenancy: Tenancy::Namespace,
        },
        settings,
        GpuCatalog::gcp(),
    )
}

fn principal_set(namespace: &str) -> String {
    format!(
        "principalSet://iam.googleapis.com/projects/4242/locations/global/workloadIdentityPools/proj-1.svc.id.goog/namespace/{namespace}"
    )
}

#[tokio::test]
async fn each_namespace_is_its_own_principal_allowed_only_its_folder_and_repository() {
    let t = tenants().await;
    let err = tenant_cloud(&t, None).err().unwrap();
    assert!(err.starts_with("PROJECT_NUMBER:"), "{err}");
    let c = tenant_cloud(&t, Some("4242")).unwrap();
    // No Google service account is impersonated: the accounts act as themselves.
    assert!(
        c.service_account_annotations("team-a", substratus_core::names::Role::Modeller)
            .unwrap()
            .is_empty()
    );
    assert_ne!(
        c.workload_principal("team-a"),
        c.workload_principal("team-b")
    );

    let bound = c.bind_identity("team-a", "modeller").await.unwrap();
    assert_eq!(bound, Some(principal_set("team-a")));
    assert_eq!(bound, c.workload_principal("team-a"));
    let puts = t.fake.seen_at("PUT", "/storage/v1/b/artifacts/iam").len();
    assert_eq!(puts, 2, "one write refused by the etag (412), one accepted");
    let policy = t.bucket.lock().unwrap().clone();
    assert_eq!(policy["version"], 3, "conditions need a version 3 policy");
    assert_eq!(policy["bindings"][0]["role"], "roles/storage.admin", "kept");
    let a = &policy["bindings"][1];
    assert_eq!(a["role"], "roles/storage.objectUser");
    assert_eq!(a["members"], json!([principal_set("team-a")]));
    assert_eq!(
        a["condition"]["expression"],
        "resource.type == \"storage.googleapis.com/Bucket\" || \
         resource.name.startsWith(\"projects/_/buckets/artifacts/objects/namespaces/team-a/\")"
    );
    let repos = t.repositories.lock().unwrap().clone();
    assert_eq!(repos.keys().collect::<Vec<_>>(), ["substratus-team-a"]);
    let writers = &repos["substratus-team-a"]["bindings"];
    assert_eq!(
        writers,
        &json!([{"role": "roles/artifactregistry.writer", "members": [principal_set("team-a")]}])
    );

    // Another account of the namespace: everything is in place, nothing is written.
    let writes = |t: &Tenants| {
        t.fake.seen_at("PUT", "/iam").len()
            + t.fake.seen_at("POST", ":setIamPolicy").len()
            + t.fake.seen_at("POST", REPOSITORIES).len()
    };
    let before = writes(&t);
    c.bind_identity("team-a", "data-loader").await.unwrap();
    assert_eq!(writes(&t), before);

    // Team B gets a binding and a repository of its own; A's are not B's.
    c.bind_identity("team-b", "modeller").await.unwrap();
    let policy = t.bucket.lock().unwrap().clone();
    let b = &policy["bindings"][2];
    assert_eq!(b["members"], json!([principal_set("team-b")]));
    assert!(
        b["condition"]["expression"]
            .as_str()
            .unwrap()
            .ends_with("objects/namespaces/team-b/\")")
    );
    assert_eq!(policy["bindings"][1], *a, "A's binding unchanged");
    let repos = t.repositories.lock().unwrap().clone();
    assert_eq!(
        repos["substratus-team-b"]["bindings"][0]["members"],
        json!([principal_set("team-b")])
    );
    // Images go to the namespace's repository; its prefixes to the namespace's folder.
    assert_eq!(
        c.image_url(substratus_core::names::Kind::Model, "team-a", "m", "t"),
        "us-central1-docker.pkg.dev/proj-1/substratus-team-a/c1-model-team-a__m:t"
    );
    assert_eq!(
        c.config().namespace_folder("team-a").to_string(),
        "gs://artifacts/namespaces/team-a"
    );
}

#[tokio::test]
async fn a_folder_is_copied_by_rewrites_inside_fake_gcs() {
    let gcs = Emulator::fake_gcs("artifacts").expect("fake-gcs-server");
    let g = google(0).await;
    common::copies_exactly_a_folder(&cloud(&g, &gcs.endpoint())).await;
    assert!(!g.fake.seen_at("POST", ":signBlob").is_empty());
}
