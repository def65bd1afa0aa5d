//! Auto-configuration: what the environment leaves unset is read from each provider's
//! metadata service (local fakes that insist on the documented headers: GCE's
//! `Metadata-Flavor: Google`, IMDSv2's session token, Azure IMDS's `Metadata: true`) and
//! EKS `DescribeCluster`; a start without them names what to set.

mod common;

use common::{Fake, json_ok, status};
use serde_json::json;
use substratus_clouds::aws::IdentityMode;
use substratus_clouds::gpu::GpuCatalog;
use substratus_core::cloud::Cloud;

#[tokio::test]
async fn gcp_fills_project_cluster_and_registry_from_the_metadata_server() {
    let fake = Fake::start(|s| {
        if s.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
            return status(403, "Metadata-Flavor");
        }
        match s.path.as_str() {
            "/computeMetadata/v1/project/project-id" => status(200, "proj-1"),
            "/computeMetadata/v1/instance/attributes/cluster-name" => status(200, "gke-1"),
            "/computeMetadata/v1/instance/attributes/cluster-location" => {
                status(200, "us-central1-a")
            }
            "/computeMetadata/v1/instance/service-accounts/default/email" => {
                status(200, "node@proj-1.iam.gserviceaccount.com")
            }
            _ => status(404, ""),
        }
    })
    .await;
    let c = substratus_clouds::gcp::auto::configure(
        substratus_clouds::gcp::auto::GcpInputs {
            metadata_endpoint: Some(fake.endpoint.clone()),
            ..Default::default()
        },
        GpuCatalog::gcp(),
    )
    .await
    .unwrap();
    let cfg = c.config();
    assert_eq!(cfg.cluster_name, "gke-1");
    assert_eq!(cfg.registry, "us-central1-docker.pkg.dev/proj-1/substratus");
    assert_eq!(
        cfg.artifact_bucket.to_string(),
        "gs://proj-1-substratus-artifacts"
    );
    assert_eq!(
        cfg.principal.as_deref(),
        Some("substratus@proj-1.iam.gserviceaccount.com")
    );
    assert_eq!(c.settings().project, "proj-1");

    // Explicit settings win over what the server says.
    let c = substratus_clouds::gcp::auto::configure(
        substratus_clouds::gcp::auto::GcpInputs {
            project: Some("other".into()),
            cluster_name: Some("mine".into()),
            registry_url: Some("europe-docker.pkg.dev/other/r".into()),
            metadata_endpoint: Some(fake.endpoint.clone()),
            ..Default::default()
        },
        GpuCatalog::gcp(),
    )
    .await
    .unwrap();
    assert_eq!(c.config().cluster_name, "mine");
    assert_eq!(c.config().registry, "europe-docker.pkg.dev/other/r");
}

#[tokio::test]
async fn gcp_without_a_metadata_server_names_the_settings_to_give() {
    let err = substratus_clouds::gcp::auto::configure(
        substratus_clouds::gcp::auto::GcpInputs {
            metadata_endpoint: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        },
        GpuCatalog::gcp(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.contains("PROJECT_ID") && err.contains("CLUSTER_NAME"),
        "{err}"
    );
}

#[tokio::test]
async fn aws_reads_region_account_and_issuer_through_imdsv2_and_eks() {
    let fake = Fake::start(|s| {
        match (s.method.as_str(), s.path.as_str()) {
            ("PUT", "/latest/api/token") => {
                if !s.headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
                    return status(400, "ttl header");
                }
                // IMDS answers with the token and how long it lives.
                (200, vec![("x-aws-ec2-metadata-token-ttl-seconds", "21600".into())], "imds-session".into())
            }
            ("GET", "/latest/dynamic/instance-identity/document") => {
                if s.headers.get("x-aws-ec2-metadata-token").map(String::as_str) != Some("imds-session") {
                    return status(401, "IMDSv2 needs the session token");
                }
                json_ok(json!({"region": "us-west-2", "accountId": "123456789012", "instanceId": "i-1"}))
            }
            ("GET", "/clusters/eks-1") => {
                if !s.headers.get("authorization").is_some_and(|a| a.contains("/us-west-2/eks/aws4_request")) {
                    return status(403, "scope");
                }
                json_ok(json!({"cluster": {"name": "eks-1", "identity": {"oidc": {
                    "issuer": "https://oidc.eks.us-west-2.amazonaws.com/id/XYZ"}}}}))
            }
            _ => status(404, ""),
        }
    })
    .await;
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            aws_sdk_s3::config::Credentials::new("AKID", "secret", None, None, "test"),
        ))
        .build();
    let c = substratus_clouds::aws::auto::configure(
        substratus_clouds::aws::auto::AwsInputs {
            cluster_name: Some("eks-1".into()),
            imds_endpoint: Some(fake.endpoint.clone()),
            eks_endpoint: Some(fake.endpoint.clone()),
            ..Default::default()
        },
        GpuCatalog::aws(),
        &sdk,
    )
    .await
    .unwrap();
    assert_eq!(c.settings().region, "us-west-2");
    assert_eq!(c.settings().account_id, "123456789012");
    assert_eq!(
        c.settings().identity,
        IdentityMode::Irsa {
            oidc_issuer: "https://oidc.eks.us-west-2.amazonaws.com/id/XYZ".into()
        }
    );
    assert_eq!(
        c.config().registry,
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/substratus"
    );
    assert_eq!(
        c.config().artifact_bucket.to_string(),
        "s3://123456789012-substratus-artifacts"
    );
    assert_eq!(
        c.config().principal.as_deref(),
        Some("arn:aws:iam::123456789012:role/substratus")
    );
    assert_eq!(fake.seen_at("PUT", "/latest/api/token").len(), 1);

    let err = substratus_clouds::aws::auto::configure(
        substratus_clouds::aws::auto::AwsInputs::default(),
        GpuCatalog::aws(),
        &sdk,
    )
    .await
    .err()
    .unwrap();
    assert!(err.contains("CLUSTER_NAME"), "{err}");
}

#[tokio::test]
async fn azure_reads_subscription_and_group_from_imds_and_names_what_is_missing() {
    let fake = Fake::start(|s| {
        if s.headers.get("metadata").map(String::as_str) != Some("true")
            || !s.query.contains_key("api-version")
        {
            return status(400, "Metadata header and api-version are required");
        }
        json_ok(json!({"compute": {"subscriptionId": "sub-9", "resourceGroupName": "MC_rg_aks_eastus", "location": "eastus"}}))
    })
    .await;
    let inputs = substratus_clouds::azure::auto::AzureInputs {
        cluster_name: Some("aks-1".into()),
        storage_account: Some("acct".into()),
        storage_key: Some("a2V5".into()),
        identity_name: Some("substratus".into()),
        oidc_issuer: Some("https://eastus.oic.prod-aks.azure.com/t/c/".into()),
        registry_url: Some("substratus.azurecr.io".into()),
        client_id: Some("cid".into()),
        imds_endpoint: Some(fake.endpoint.clone()),
        ..Default::default()
    };
    let c = substratus_clouds::azure::auto::configure(inputs.clone(), GpuCatalog::azure())
        .await
        .unwrap();
    assert_eq!(c.settings().subscription_id, "sub-9");
    assert_eq!(c.settings().resource_group, "MC_rg_aks_eastus");
    assert_eq!(c.config().principal.as_deref(), Some("cid"));
    assert_eq!(
        c.config().artifact_bucket.to_string(),
        "az://substratus-artifacts"
    );

    let err = substratus_clouds::azure::auto::configure(
        substratus_clouds::azure::auto::AzureInputs {
            storage_account: None,
            ..inputs
        },
        GpuCatalog::azure(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.contains("AZURE_STORAGE_ACCOUNT"), "{err}");
}
