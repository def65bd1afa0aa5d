//! The AWS backend: presigned PutObject round trips through a real S3 server on loopback
//! (versitygw, which checks SigV4 and Content-MD5) with the upload code `sub` runs; tampered
//! bytes and a different md5 are refused; a multipart object's md5 is computed by reading it.
//! IAM (trust policy) and EKS (Pod Identity) are local fakes that check the documented
//! request shapes, including the SigV4 scope of each service and the no-duplicate rule.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::{Credentials, Region, SharedCredentialsProvider};
use common::{Fake, json_ok, md5_hex, put_like_sub, status};
use serde_json::{Value, json};
use substratus_clouds::aws::{AwsCloud, AwsSettings, IdentityMode};
use substratus_clouds::gpu::GpuCatalog;
use substratus_core::cloud::{BucketUrl, Cloud, CloudConfig, CloudError, Tenancy};
use substratus_devcluster::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

const ROLE: &str = "arn:aws:iam::123456789012:role/substratus";
const ISSUER: &str = "https://oidc.eks.us-west-2.amazonaws.com/id/ABC123";

fn sdk() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        )))
        .build()
}

fn cloud(identity: IdentityMode, s3: Option<&str>, fake: Option<&str>) -> AwsCloud {
    cloud_with(identity, s3, fake, Tenancy::Shared).unwrap()
}

fn cloud_with(
    identity: IdentityMode,
    s3: Option<&str>,
    fake: Option<&str>,
    tenancy: Tenancy,
) -> Result<AwsCloud, String> {
    AwsCloud::new(
        CloudConfig {
            cluster_name: "substratus".into(),
            artifact_bucket: BucketUrl::parse("s3://artifacts").unwrap(),
            registry: "123456789012.dkr.ecr.us-west-2.amazonaws.com/substratus".into(),
            principal: Some(ROLE.into()),
            tenancy,
        },
        AwsSettings {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            partition: "aws".into(),
            identity,
            s3_endpoint: s3.map(str::to_owned),
            iam_endpoint: fake.map(str::to_owned),
            eks_endpoint: fake.map(str::to_owned),
            ecr_endpoint: fake.map(str::to_owned),
            force_path_style: true,
        },
        GpuCatalog::aws(),
        &sdk(),
    )
}

fn start_s3() -> S3Server {
    let bins = substratus_devcluster::locate_binaries().expect("test binaries");
    S3Server::start(&bins, "artifacts").expect("versitygw")
}

#[tokio::test]
async fn a_presigned_upload_round_trips_and_tampering_is_refused() {
    let s3 = start_s3();
    let c = cloud(IdentityMode::PodIdentity, Some(&s3.endpoint()), None);
    let key = "abc/uploads/latest.tar.gz";
    assert_eq!(c.stored_md5(key).await.unwrap(), None);

    let body: Vec<u8> = (0..400_000u32).map(|i| (i % 241) as u8).collect();
    let md5 = md5_hex(&body);
    let url = c
        .signed_upload_url(key, &md5, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(url.url.contains("X-Amz-Expires=120"), "{}", url.url);
    assert!(
        url.url.contains("content-md5"),
        "Content-MD5 is a signed header: {}",
        url.url
    );

    // Tampered bytes with the declared md5: the server's MD5 check refuses them.
    let mut tampered = body.clone();
    tampered[7] ^= 1;
    let err = put_like_sub(&url.url, &tampered, &md5).await.unwrap_err();
    assert!(err.contains("400") || err.contains("BadDigest"), "{err}");
    // Another archive with its own md5: the signature (bound to the md5) refuses it.
    let other = b"other".to_vec();
    let err = put_like_sub(&url.url, &other, &md5_hex(&other))
        .await
        .unwrap_err();
    assert!(
        err.contains("403") || err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    assert_eq!(
        c.stored_md5(key).await.unwrap(),
        None,
        "nothing refused was stored"
    );

    put_like_sub(&url.url, &body, &md5).await.expect("PUT");
    assert_eq!(c.stored_md5(key).await.unwrap(), Some(md5));
}

#[tokio::test]
async fn a_multipart_objects_md5_is_computed_by_reading_it() {
    let s3 = start_s3();
    let c = cloud(IdentityMode::PodIdentity, Some(&s3.endpoint()), None);
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk())
            .endpoint_url(s3.endpoint())
            .force_path_style(true)
            .build(),
    );
    let key = "mp/uploads/latest.tar.gz";
    let part1: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 199) as u8).collect();
    let part2 = b"tail of the archive".to_vec();
    let up = client
        .create_multipart_upload()
        .bucket("artifacts")
        .key(key)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = vec![];
    for (n, p) in [(1, &part1), (2, &part2)] {
        let r = client
            .upload_part()
            .bucket("artifacts")
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(p.clone().into())
            .send()
            .await
            .unwrap();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap())
                .build(),
        );
    }
    let done = client
        .complete_multipart_upload()
        .bucket("artifacts")
        .key(key)
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        done.e_tag().unwrap().contains('-'),
        "a multipart ETag is not an MD5"
    );
    let whole = [part1, part2].concat();
    assert_eq!(c.stored_md5(key).await.unwrap(), Some(md5_hex(&whole)));
}

/// IAM's query protocol: form-encoded POSTs, XML answers; the role's trust policy is kept
/// URL-encoded as IAM returns it.
fn iam_fake(
    policy: Arc<Mutex<Value>>,
) -> impl Fn(&common::Seen) -> (u16, Vec<(&'static str, String)>, String) {
    move |s| {
        let auth = s.headers.get("authorization").cloned().unwrap_or_default();
        let form = s.form();
        if form.contains_key("Action") {
            // SigV4 scoped to IAM (a global service signed in us-east-1).
            if !auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/"))
                || !auth.contains("/us-east-1/iam/aws4_request")
            {
                return status(403, "bad signature scope");
            }
            assert_eq!(form.get("Version").map(String::as_str), Some("2010-05-08"));
            assert_eq!(form.get("RoleName").map(String::as_str), Some("substratus"));
            let xml = |body: String| (200, vec![("content-type", "text/xml".into())], body);
            return match form["Action"].as_str() {
                "GetRole" => {
                    let doc = policy.lock().unwrap().to_string();
                    let enc = percent_encoding::utf8_percent_encode(
                        &doc,
                        percent_encoding::NON_ALPHANUMERIC,
                    );
                    xml(format!(
                        r#"<GetRoleResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><GetRoleResult><Role><Path>/</Path><RoleName>substratus</RoleName><RoleId>AROAEXAMPLE</RoleId><Arn>{ROLE}</Arn><CreateDate>2024-01-01T00:00:00Z</CreateDate><AssumeRolePolicyDocument>{enc}</AssumeRolePolicyDocument></Role></GetRoleResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></GetRoleResponse>"#
                    ))
                }
                "UpdateAssumeRolePolicy" => {
                    let doc: Value =
                        serde_json::from_str(&form["PolicyDocument"]).expect("policy is JSON");
                    *policy.lock().unwrap() = doc;
                    xml(r#"<UpdateAssumeRolePolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><ResponseMetadata><RequestId>r2</RequestId></ResponseMetadata></UpdateAssumeRolePolicyResponse>"#.into())
                }
                _ => status(400, "unexpected action"),
            };
        }
        status(404, "no such API in this fake")
    }
}

#[tokio::test]
async fn irsa_adds_each_service_account_to_the_trust_policy_once_and_keeps_the_others() {
    let provider =
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/ABC123";
    let sub_key = "oidc.eks.us-west-2.amazonaws.com/id/ABC123:sub";
    let policy = Arc::new(Mutex::new(json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"},
        {"Effect": "Allow", "Principal": {"Federated": provider}, "Action": "sts:AssumeRoleWithWebIdentity",
         "Condition": {"StringEquals": {sub_key: "system:serviceaccount:substratus:substratus"}}},
    ]})));
    let fake = Fake::start(iam_fake(policy.clone())).await;
    let c = cloud(
        IdentityMode::Irsa {
            oidc_issuer: ISSUER.into(),
        },
        None,
        Some(&fake.endpoint),
    );
    assert_eq!(
        c.bind_identity("team-a", "modeller")
            .await
            .unwrap()
            .as_deref(),
        Some(ROLE)
    );
    c.bind_identity("team-b", "modeller").await.unwrap();
    c.bind_identity("team-a", "modeller").await.unwrap();
    let updates = fake
        .seen()
        .into_iter()
        .filter(|s| s.form().get("Action").map(String::as_str) == Some("UpdateAssumeRolePolicy"))
        .count();
    assert_eq!(
        updates, 2,
        "the third bind found its subject and wrote nothing"
    );
    let p = policy.lock().unwrap().clone();
    assert_eq!(
        p["Statement"][0]["Principal"]["Service"],
        "ec2.amazonaws.com"
    );
    assert_eq!(
        p["Statement"][1]["Condition"]["StringEquals"][sub_key],
        json!([
            "system:serviceaccount:substratus:substratus",
            "system:serviceaccount:team-a:modeller",
            "system:serviceaccount:team-b:modeller",
        ])
    );
}

#[tokio::test]
async fn pod_identity_creates_one_association_and_refuses_a_foreign_one() {
    let assocs: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(vec![json!({
        "associationId": "a-foreign", "namespace": "taken", "serviceAccount": "modeller",
        "clusterName": "substratus", "roleArn": "arn:aws:iam::123456789012:role/someone-else",
    })]));
    let a = assocs.clone();
    let fake = Fake::start(move |s| {
        let auth = s.headers.get("authorization").cloned().unwrap_or_default();
        if !auth.contains("/us-east-1/eks/aws4_request") {
            return status(403, "bad signature scope");
        }
        let base = "/clusters/substratus/pod-identity-associations";
        if s.method == "GET" && s.path == base {
            let list: Vec<Value> = a
                .lock()
                .unwrap()
                .iter()
                .filter(|x| {
                    Some(x["namespace"].as_str().unwrap())
                        == s.query.get("namespace").map(String::as_str)
                        && Some(x["serviceAccount"].as_str().unwrap())
                            == s.query.get("serviceAccount").map(String::as_str)
                })
                .map(|x| {
                    json!({"associationId": x["associationId"], "namespace": x["namespace"],
                    "serviceAccount": x["serviceAccount"], "clusterName": "substratus"})
                })
                .collect();
            return json_ok(json!({"associations": list}));
        }
        if s.method == "GET" && s.path.starts_with(&format!("{base}/")) {
            let id = s.path.rsplit('/').next().unwrap();
            return match a.lock().unwrap().iter().find(|x| x["associationId"] == id) {
                Some(x) => json_ok(json!({"association": x})),
                None => status(404, r#"{"message":"not found"}"#),
            };
        }
        if s.method == "POST" && s.path == base {
            let b = s.json();
            for k in [
                "namespace",
                "serviceAccount",
                "roleArn",
                "clientRequestToken",
            ] {
                assert!(b[k].is_string(), "{k} missing from {b}");
            }
            let x = json!({"associationId": format!("a-{}", a.lock().unwrap().len()),
                "namespace": b["namespace"], "serviceAccount": b["serviceAccount"],
                "roleArn": b["roleArn"], "clusterName": "substratus"});
            a.lock().unwrap().push(x.clone());
            return json_ok(json!({"association": x}));
        }
        status(404, "no such API in this fake")
    })
    .await;
    let c = cloud(IdentityMode::PodIdentity, None, Some(&fake.endpoint));
    c.bind_identity("team-a", "modeller").await.unwrap();
    c.bind_identity("team-a", "modeller").await.unwrap();
    assert_eq!(
        fake.seen_at("POST", "/pod-identity-associations").len(),
        1,
        "no duplicate"
    );
    assert_eq!(assocs.lock().unwrap().len(), 2);
    assert_eq!(assocs.lock().unwrap()[1]["roleArn"], ROLE);

    let err = c.bind_identity("taken", "modeller").await.unwrap_err();
    assert!(matches!(err, CloudError::Permanent { .. }), "{err}");
    assert!(err.to_string().contains("someone-else"), "{err}");
}

/// ECR's JSON API, as the SDK speaks it: `X-Amz-Target` names the operation.
const CREATE_REPOSITORY: &str = "AmazonEC2ContainerRegistry_V20150921.CreateRepository";

#[tokio::test]
async fn a_builds_ecr_repository_is_created_once_before_the_push() {
    let fake = Fake::start(|s| {
        if s.headers.get("x-amz-target").map(String::as_str) != Some(CREATE_REPOSITORY) {
            return status(400, "unexpected");
        }
        let name = s.json()["repositoryName"].as_str().unwrap_or("").to_owned();
        let error = |code: &str| {
            (
                400,
                vec![
                    ("content-type", "application/x-amz-json-1.1".to_owned()),
                    ("x-amzn-errortype", code.to_owned()),
                ],
                json!({"__type": code, "message": format!("{code} for {name}")}).to_string(),
            )
        };
        match name.as_str() {
            n if n.ends_with("__exists") => error("RepositoryAlreadyExistsException"),
            n if n.ends_with("__denied") => error("AccessDeniedException"),
            _ => (
                200,
                vec![("content-type", "application/x-amz-json-1.1".to_owned())],
                json!({"repository": {"repositoryName": name, "registryId": "123456789012",
                    "repositoryArn": format!("arn:aws:ecr:us-east-1:123456789012:repository/{name}")}})
                .to_string(),
            ),
        }
    })
    .await;
    let c = cloud(IdentityMode::PodIdentity, None, Some(&fake.endpoint));
    let image = c.image_url(substratus_core::names::Kind::Model, "team-a", "m", "v1-abc");
    c.prepare_image(&image).await.unwrap();
    let sent: Vec<Value> = fake.seen().iter().map(|s| s.json()).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0]["repositoryName"],
        "substratus/substratus-model-team-a__m"
    );
    assert_eq!(sent[0]["imageTagMutability"], "MUTABLE");
    assert_eq!(sent[0]["imageScanningConfiguration"]["scanOnPush"], true);
    assert_eq!(
        sent[0]["tags"],
        json!([{"Key": "app.kubernetes.io/managed-by", "Value": "substratus"}])
    );
    // Made once: another tag of the same image asks nothing.
    let again = c.image_url(substratus_core::names::Kind::Model, "team-a", "m", "v2-def");
    c.prepare_image(&again).await.unwrap();
    assert_eq!(fake.seen().len(), 1);
    // A repository that exists already is fine; a refusal is permanent and names it.
    let exists = c.image_url(
        substratus_core::names::Kind::Model,
        "team-a",
        "exists",
        "v1",
    );
    c.prepare_image(&exists).await.unwrap();
    let denied = c.image_url(
        substratus_core::names::Kind::Model,
        "team-a",
        "denied",
        "v1",
    );
    match c.prepare_image(&denied).await {
        Err(CloudError::Permanent { message, .. }) => assert!(
            message
                .contains("creating the ECR repository substratus/substratus-model-team-a__denied")
                && message.contains("AccessDeniedException"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.seen().len(), 3);
}

/// `TENANCY=namespace` on EKS: sessions of Pod Identity carry the pod's namespace as the tag
/// the role's policy matches, so each namespace acts as its own principal (the role as a
/// session of that namespace) and pushes under its own registry path; IRSA, whose sessions
/// carry no tag, is refused.
#[tokio::test]
async fn namespace_tenancy_needs_pod_identity_and_scopes_each_namespace() {
    let irsa = IdentityMode::Irsa {
        oidc_issuer: ISSUER.into(),
    };
    let err = cloud_with(irsa, None, None, Tenancy::Namespace)
        .err()
        .unwrap();
    assert!(
        err.starts_with("TENANCY=namespace on aws needs AWS_IDENTITY_MODE=pod-identity"),
        "{err}"
    );
    let fake = Fake::start(|s| {
        let base = "/clusters/substratus/pod-identity-associations";
        match (s.method.as_str(), s.path.as_str()) {
            ("GET", p) if p == base => json_ok(json!({"associations": []})),
            ("POST", p) if p == base => {
                let b = s.json();
                json_ok(json!({"association": {"associationId": "a-1",
                    "namespace": b["namespace"], "serviceAccount": b["serviceAccount"],
                    "roleArn": b["roleArn"], "clusterName": "substratus"}}))
            }
            _ => status(404, "no such API in this fake"),
        }
    })
    .await;
    let c = cloud_with(
        IdentityMode::PodIdentity,
        None,
        Some(&fake.endpoint),
        Tenancy::Namespace,
    )
    .unwrap();
    let a = c.bind_identity("team-a", "modeller").await.unwrap();
    let b = c.bind_identity("team-b", "modeller").await.unwrap();
    assert_eq!(
        a.as_deref(),
        Some(&*format!("{ROLE} kubernetes-namespace=team-a"))
    );
    assert_ne!(a, b, "A's identity is not B's");
    assert_eq!(a, c.workload_principal("team-a"));
    // Both associations name the one role: the session tag tells the namespaces apart.
    let roles: Vec<Value> = fake
        .seen_at("POST", "/pod-identity-associations")
        .iter()
        .map(|s| s.json()["roleArn"].clone())
        .collect();
    assert_eq!(roles, [json!(ROLE), json!(ROLE)]);
    assert_eq!(
        c.image_url(substratus_core::names::Kind::Model, "team-a", "m", "v1"),
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/substratus/team-a/substratus-model-team-a__m:v1"
    );
    assert_eq!(
        c.config().namespace_folder("team-a").to_string(),
        "s3://artifacts/namespaces/team-a"
    );
}

#[tokio::test]
async fn a_folder_is_copied_object_by_object_inside_the_bucket() {
    let s3 = start_s3();
    let c = cloud(IdentityMode::PodIdentity, Some(&s3.endpoint()), None);
    common::copies_exactly_a_folder(&c).await;
}
