//! Auto-configuration on EKS: region and account from IMDSv2's instance identity document
//! (session token first, as IMDSv2 requires), the OIDC issuer from EKS `DescribeCluster`;
//! credentials from aws-config's chain (IRSA web identity, Pod Identity, instance profile).

use serde::Deserialize;
use substratus_core::cloud::{BucketUrl, CloudConfig};

use super::{AwsCloud, AwsSettings, IdentityMode};
use crate::gpu::GpuCatalog;

/// Settings as given; `None` = discover or default.
#[derive(Clone, Debug, Default)]
pub struct AwsInputs {
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub cluster_name: Option<String>,
    pub oidc_issuer: Option<String>,
    /// `irsa` (default) or `pod-identity`.
    pub identity_mode: Option<String>,
    pub tenancy: substratus_core::cloud::Tenancy,
    pub artifact_bucket_url: Option<String>,
    pub registry_url: Option<String>,
    pub principal: Option<String>,
    /// IMDS endpoint (default: aws-config's, `http://169.254.169.254`).
    pub imds_endpoint: Option<String>,
    /// Endpoint overrides (tests, S3-compatible storage).
    pub s3_endpoint: Option<String>,
    pub eks_endpoint: Option<String>,
    pub ecr_endpoint: Option<String>,
    pub iam_endpoint: Option<String>,
    pub force_path_style: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument {
    region: String,
    account_id: String,
}

async fn identity_document(endpoint: Option<&str>) -> Result<IdentityDocument, String> {
    let mut b = aws_config::imds::Client::builder();
    if let Some(e) = endpoint {
        b = b.endpoint(e).map_err(|e| format!("IMDS endpoint: {e}"))?;
    }
    let doc = b
        .build()
        .get("/latest/dynamic/instance-identity/document")
        .await
        .map_err(|e| {
            let mut m = format!("IMDSv2: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                m.push_str(&format!(": {s}"));
                src = s.source();
            }
            m
        })?;
    serde_json::from_str(doc.as_ref()).map_err(|e| format!("IMDSv2 identity document: {e}"))
}

/// The AWS backend from explicit settings, IMDSv2 and EKS.
pub async fn configure(
    i: AwsInputs,
    gpus: GpuCatalog,
    sdk: &aws_config::SdkConfig,
) -> Result<AwsCloud, String> {
    let cluster_name = i
        .cluster_name
        .clone()
        .ok_or("CLUSTER_NAME is required on aws (the EKS cluster's name)")?;
    let (region, account_id) = match (&i.region, &i.account_id) {
        (Some(r), Some(a)) => (r.clone(), a.clone()),
        _ => {
            let doc = identity_document(i.imds_endpoint.as_deref()).await.map_err(|e| {
                format!("AWS_REGION or AWS_ACCOUNT_ID is not set and the instance metadata did not answer ({e}); set them")
            })?;
            (
                i.region.clone().unwrap_or(doc.region),
                i.account_id.clone().unwrap_or(doc.account_id),
            )
        }
    };
    let identity = match i.identity_mode.as_deref().unwrap_or("irsa") {
        "pod-identity" => IdentityMode::PodIdentity,
        "irsa" => {
            let issuer = match &i.oidc_issuer {
                Some(x) => x.clone(),
                None => {
                    let mut eks = aws_sdk_eks::config::Builder::from(sdk)
                        .region(aws_sdk_eks::config::Region::new(region.clone()));
                    if let Some(e) = &i.eks_endpoint {
                        eks = eks.endpoint_url(e);
                    }
                    let out = aws_sdk_eks::Client::from_conf(eks.build())
                        .describe_cluster()
                        .name(&cluster_name)
                        .send()
                        .await
                        .map_err(|e| {
                            format!(
                                "OIDC_ISSUER is not set and EKS DescribeCluster {cluster_name} failed ({}); set it or allow eks:DescribeCluster",
                                super::error_chain(&e)
                            )
                        })?;
                    out.cluster()
                        .and_then(|c| c.identity())
                        .and_then(|i| i.oidc())
                        .and_then(|o| o.issuer())
                        .map(str::to_owned)
                        .ok_or_else(|| format!("EKS cluster {cluster_name} has no OIDC issuer; enable IRSA or use AWS_IDENTITY_MODE=pod-identity"))?
                }
            };
            IdentityMode::Irsa {
                oidc_issuer: issuer,
            }
        }
        other => {
            return Err(format!(
                "AWS_IDENTITY_MODE: {other:?} is neither irsa nor pod-identity"
            ));
        }
    };
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    let bucket = i
        .artifact_bucket_url
        .clone()
        .unwrap_or_else(|| format!("s3://{account_id}-substratus-artifacts"));
    let config = CloudConfig {
        cluster_name,
        artifact_bucket: BucketUrl::parse(&bucket)
            .map_err(|e| format!("ARTIFACT_BUCKET_URL: {e}"))?,
        registry: i
            .registry_url
            .clone()
            .unwrap_or_else(|| format!("{account_id}.dkr.ecr.{region}.amazonaws.com/substratus")),
        principal: Some(
            i.principal
                .clone()
                .unwrap_or_else(|| format!("arn:{partition}:iam::{account_id}:role/substratus")),
        ),
        tenancy: i.tenancy,
    };
    let settings = AwsSettings {
        region,
        account_id,
        partition: partition.into(),
        identity,
        s3_endpoint: i.s3_endpoint.clone(),
        iam_endpoint: i.iam_endpoint.clone(),
        eks_endpoint: i.eks_endpoint.clone(),
        ecr_endpoint: i.ecr_endpoint.clone(),
        force_path_style: i.force_path_style,
    };
    AwsCloud::new(config, settings, gpus, sdk)
}
