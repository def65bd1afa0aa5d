//! Configuration: flags, or the environment variables of the original's `system` ConfigMap
//! (`CLOUD`, `CLUSTER_NAME`, `ARTIFACT_BUCKET_URL`, `REGISTRY_URL`, `PRINCIPAL`, ...), which
//! the Deployment loads with `envFrom`. Anything missing is named at start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use substratus_clouds::gpu::GpuCatalog;
use substratus_clouds::kind::{KindCloud, KindSettings};
use substratus_core::Cloud;
use substratus_core::cloud::{BucketUrl, CloudConfig};

/// Settings of `substratus-operator run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Cloud backend: kind, gcp, aws or azure.
    #[arg(long, env = "CLOUD")]
    pub cloud: Option<String>,
    /// Name of this cluster: part of storage prefixes and image names.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Bucket for artifacts and uploads, e.g. s3://substratus-artifacts.
    #[arg(long, env = "ARTIFACT_BUCKET_URL")]
    pub artifact_bucket_url: Option<String>,
    /// Registry that built images are pushed to.
    #[arg(long, env = "REGISTRY_URL")]
    pub registry_url: Option<String>,
    /// Cloud identity workloads run as (not used on kind).
    #[arg(long, env = "PRINCIPAL")]
    pub principal: Option<String>,
    /// `namespace` (each namespace's workloads have a cloud identity of their own, allowed
    /// only the namespace's bucket folder and registry repository) or `shared` (one identity
    /// for every namespace: one trust domain).
    #[arg(long, env = "TENANCY", default_value = "shared")]
    pub tenancy: substratus_core::cloud::Tenancy,
    /// GPU catalogue to place GPU pods with (defaults to the cloud's own).
    #[arg(long, env = "GPU_CATALOG")]
    pub gpu_catalog: Option<String>,
    /// YAML/JSON file overriding entries of the GPU catalogue.
    #[arg(long, env = "GPU_CATALOG_FILE")]
    pub gpu_catalog_file: Option<std::path::PathBuf>,

    /// kind: S3 endpoint of the bucket (MinIO), as the operator reaches it.
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// kind: S3 endpoint put into signed upload URLs, as users reach it.
    #[arg(long, env = "S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// kind: CSI driver mounting S3 prefixes into pods.
    #[arg(long, env = "S3_CSI_DRIVER", default_value = "ru.yandex.s3.csi")]
    pub s3_csi_driver: String,
    /// kind: how pods mount prefixes: `claims` (a static PersistentVolume and claim per
    /// prefix, any S3 CSI driver), `namespace` (one per namespace, mounted by subPath) or
    /// `inline` (inline volumes naming the object, for substratus-csi-s3, which derives the
    /// prefix itself: no claim to bind).
    #[arg(long, env = "S3_CSI_VOLUMES", default_value = "claims")]
    pub s3_csi_volumes: substratus_clouds::kind::KindVolumes,
    /// kind: `namespace/name` of the Secret with the CSI driver's S3 credentials (claims).
    #[arg(
        long,
        env = "S3_CSI_SECRET",
        default_value = "kube-system/csi-s3-secret"
    )]
    pub s3_csi_secret: String,
    /// kind: registry the builder pulls Docker Hub images from (a pull-through cache, or an
    /// offline cluster's registry holding copies, e.g. `library/python:3.11-slim`).
    #[arg(long, env = "REGISTRY_MIRROR")]
    pub registry_mirror: Option<String>,

    /// gcp: project of the cluster (default: from the metadata server).
    #[arg(long, env = "PROJECT_ID")]
    pub project_id: Option<String>,
    /// gcp: the project's number, which names namespaces' principal sets with
    /// TENANCY=namespace (default: from the metadata server).
    #[arg(long, env = "PROJECT_NUMBER")]
    pub project_number: Option<String>,
    /// gcp: region or zone of the cluster (default: from the metadata server).
    #[arg(long, env = "CLUSTER_LOCATION")]
    pub cluster_location: Option<String>,
    /// aws: region (default: IMDSv2).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// aws: account id (default: IMDSv2).
    #[arg(long, env = "AWS_ACCOUNT_ID")]
    pub aws_account_id: Option<String>,
    /// aws: `irsa` (trust policy; default) or `pod-identity` (EKS Pod Identity associations).
    #[arg(long, env = "AWS_IDENTITY_MODE")]
    pub aws_identity_mode: Option<String>,
    /// aws/azure: the cluster's OIDC issuer (aws default: EKS DescribeCluster).
    #[arg(long, env = "OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// azure: subscription (default: IMDS).
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
    pub azure_subscription_id: Option<String>,
    /// azure: resource group of the managed identity (default: IMDS).
    #[arg(long, env = "AZURE_RESOURCE_GROUP")]
    pub azure_resource_group: Option<String>,
    /// azure: storage account of the artifact container.
    #[arg(long, env = "AZURE_STORAGE_ACCOUNT")]
    pub azure_storage_account: Option<String>,
    /// azure: account key (default: none — workload identity and user-delegation SAS).
    #[arg(long, env = "AZURE_STORAGE_KEY", hide_env_values = true)]
    pub azure_storage_key: Option<String>,
    /// azure: name of the user-assigned managed identity workloads run as.
    #[arg(long, env = "AZURE_IDENTITY_NAME")]
    pub azure_identity_name: Option<String>,
    /// azure: set by the workload identity webhook.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub azure_tenant_id: Option<String>,
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub azure_federated_token_file: Option<std::path::PathBuf>,
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub azure_authority_host: Option<String>,
    /// azure: how pods mount prefixes: `inline` (mounted with each pod's workload identity
    /// token; blob CSI driver 1.27+; default with TENANCY=namespace) or `claims` (a static
    /// volume and claim per namespace, mounted as PRINCIPAL, each object's folder by
    /// subPath; default otherwise).
    #[arg(long, env = "AZURE_BLOB_VOLUMES")]
    pub azure_blob_volumes: Option<substratus_clouds::azure::BlobVolumes>,
    /// azure, TENANCY=namespace: region of the managed identity made for each namespace.
    #[arg(long, env = "AZURE_LOCATION")]
    pub azure_location: Option<String>,
    /// azure, TENANCY=namespace: resource group the namespaces' identities are made in
    /// (default: AZURE_RESOURCE_GROUP).
    #[arg(long, env = "AZURE_IDENTITY_RESOURCE_GROUP")]
    pub azure_identity_resource_group: Option<String>,

    /// Image of the builder (a kaniko executor) that build Jobs run.
    #[arg(
        long,
        env = "BUILDER_IMAGE",
        default_value = substratus_core::plan::build::DEFAULT_BUILDER_IMAGE
    )]
    pub builder_image: String,
    /// Image with `git` that clones git build sources.
    #[arg(
        long,
        env = "GIT_IMAGE",
        default_value = substratus_core::plan::build::DEFAULT_GIT_IMAGE
    )]
    pub git_image: String,
    /// Image that checks and unpacks an uploaded build context before the builder reads it
    /// (this operator's own image; the chart sets it). Unset: the builder gets the archive.
    #[arg(long, env = "CONTEXT_IMAGE")]
    pub context_image: Option<String>,
    /// Seconds a signed upload URL stays valid.
    #[arg(long, env = "UPLOAD_URL_TTL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(30..=604800))]
    pub upload_url_ttl_seconds: u64,

    /// Address of /metrics.
    #[arg(long, env = "METRICS_BIND_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_bind_address: SocketAddr,
    /// Address of /healthz and /readyz.
    #[arg(
        long,
        env = "HEALTH_PROBE_BIND_ADDRESS",
        default_value = "0.0.0.0:8081"
    )]
    pub health_probe_bind_address: SocketAddr,
    /// Run only while holding the leader Lease (for more than one replica).
    #[arg(long, env = "LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    #[arg(long, env = "LEASE_NAME", default_value = "substratus-operator")]
    pub lease_name: String,
    /// Seconds a leader's Lease is valid without renewal.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Reconciles at once, per kind.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Seconds within which every object is reconciled again even if nothing changed (a
    /// safety net; each round is spread evenly over the period).
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub resync_seconds: u64,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Threads that run the reconciles and watches: 1 runs everything on one thread (no
    /// hand-over between threads on the way from a watch event to a write); 0 is one per
    /// core.
    #[arg(long, env = "WORKER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=256))]
    pub worker_threads: u16,
}

fn required(value: &Option<String>, flag: &str, env: &str) -> Result<String> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => bail!("{env} is required (flag --{flag} or environment variable {env})"),
    }
}

impl RunArgs {
    /// The builder images and the upload URL lifetime.
    pub fn build_settings(&self) -> substratus_core::plan::build::BuildSettings {
        substratus_core::plan::build::BuildSettings {
            builder_image: self.builder_image.clone(),
            git_image: self.git_image.clone(),
            context_image: self.context_image.clone().filter(|s| !s.is_empty()),
            upload_url_ttl: std::time::Duration::from_secs(self.upload_url_ttl_seconds),
        }
    }

    /// Builds the configured cloud backend, or says what is missing.
    pub async fn cloud(&self) -> Result<Arc<dyn Cloud>> {
        let cloud = required(&self.cloud, "cloud", "CLOUD")?;
        if !matches!(cloud.as_str(), "kind" | "gcp" | "aws" | "azure") {
            bail!("CLOUD: unknown cloud {cloud:?}; expected kind, gcp, aws or azure");
        }
        let catalog_name = self.gpu_catalog.clone().unwrap_or_else(|| cloud.clone());
        let mut gpus = GpuCatalog::builtin(&catalog_name).with_context(|| {
            format!(
                "GPU_CATALOG: unknown catalogue {catalog_name:?}; expected gcp, aws, azure or kind"
            )
        })?;
        if let Some(path) = &self.gpu_catalog_file {
            let doc = std::fs::read_to_string(path)
                .with_context(|| format!("GPU_CATALOG_FILE: reading {}", path.display()))?;
            gpus = gpus.with_overrides(&doc).map_err(anyhow::Error::msg)?;
        }
        match cloud.as_str() {
            "kind" => {
                let config = CloudConfig {
                    cluster_name: self.cluster_name.clone().unwrap_or_else(|| "kind".into()),
                    artifact_bucket: BucketUrl::parse(
                        self.artifact_bucket_url
                            .as_deref()
                            .unwrap_or("s3://substratus-artifacts"),
                    )
                    .map_err(|e| anyhow::anyhow!("ARTIFACT_BUCKET_URL: {e}"))?,
                    registry: self
                        .registry_url
                        .clone()
                        .unwrap_or_else(|| "registry.substratus.svc.cluster.local:5000".into()),
                    principal: None,
                    tenancy: self.tenancy,
                };
                let settings = KindSettings {
                    endpoint: required(&self.s3_endpoint, "s3-endpoint", "S3_ENDPOINT")?,
                    public_endpoint: self.s3_public_endpoint.clone(),
                    region: self.s3_region.clone(),
                    access_key_id: required(
                        &self.s3_access_key_id,
                        "s3-access-key-id",
                        "AWS_ACCESS_KEY_ID",
                    )?,
                    secret_access_key: required(
                        &self.s3_secret_access_key,
                        "s3-secret-access-key",
                        "AWS_SECRET_ACCESS_KEY",
                    )?,
                    csi_driver: self.s3_csi_driver.clone(),
                    csi_secret: self
                        .s3_csi_secret
                        .split_once('/')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .context("S3_CSI_SECRET must be namespace/name")?,
                    registry_mirror: self.registry_mirror.clone().filter(|m| !m.is_empty()),
                    volumes: self.s3_csi_volumes,
                };
                Ok(Arc::new(
                    KindCloud::new(config, settings, gpus).map_err(anyhow::Error::msg)?,
                ))
            }
            #[cfg(feature = "gcp")]
            "gcp" => {
                let inputs = substratus_clouds::gcp::auto::GcpInputs {
                    project: self.project_id.clone(),
                    project_number: self.project_number.clone(),
                    tenancy: self.tenancy,
                    cluster_name: self.cluster_name.clone(),
                    cluster_location: self.cluster_location.clone(),
                    artifact_bucket_url: self.artifact_bucket_url.clone(),
                    registry_url: self.registry_url.clone(),
                    principal: self.principal.clone(),
                    metadata_endpoint: None,
                };
                let c = substratus_clouds::gcp::auto::configure(inputs, gpus)
                    .await
                    .map_err(anyhow::Error::msg)?;
                Ok(Arc::new(c))
            }
            #[cfg(feature = "aws")]
            "aws" => {
                // Credentials, and endpoint overrides (AWS_ENDPOINT_URL_S3, ...), from
                // aws-config's chain: IRSA web identity, Pod Identity, instance profile.
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                let inputs = substratus_clouds::aws::auto::AwsInputs {
                    region: self.aws_region.clone(),
                    account_id: self.aws_account_id.clone(),
                    cluster_name: self.cluster_name.clone(),
                    oidc_issuer: self.oidc_issuer.clone(),
                    identity_mode: self.aws_identity_mode.clone(),
                    tenancy: self.tenancy,
                    artifact_bucket_url: self.artifact_bucket_url.clone(),
                    registry_url: self.registry_url.clone(),
                    principal: self.principal.clone(),
                    ..Default::default()
                };
                let c = substratus_clouds::aws::auto::configure(inputs, gpus, &sdk)
                    .await
                    .map_err(anyhow::Error::msg)?;
                Ok(Arc::new(c))
            }
            #[cfg(feature = "azure")]
            "azure" => {
                let inputs = substratus_clouds::azure::auto::AzureInputs {
                    cluster_name: self.cluster_name.clone(),
                    subscription_id: self.azure_subscription_id.clone(),
                    resource_group: self.azure_resource_group.clone(),
                    storage_account: self.azure_storage_account.clone(),
                    storage_key: self.azure_storage_key.clone(),
                    identity_name: self.azure_identity_name.clone(),
                    oidc_issuer: self.oidc_issuer.clone(),
                    artifact_bucket_url: self.artifact_bucket_url.clone(),
                    registry_url: self.registry_url.clone(),
                    principal: self.principal.clone(),
                    client_id: self.azure_client_id.clone(),
                    tenant_id: self.azure_tenant_id.clone(),
                    federated_token_file: self.azure_federated_token_file.clone(),
                    authority_host: self.azure_authority_host.clone(),
                    tenancy: self.tenancy,
                    blob_volumes: self.azure_blob_volumes,
                    location: self.azure_location.clone(),
                    identity_resource_group: self.azure_identity_resource_group.clone(),
                    ..Default::default()
                };
                let c = substratus_clouds::azure::auto::configure(inputs, gpus)
                    .await
                    .map_err(anyhow::Error::msg)?;
                Ok(Arc::new(c))
            }
            // Reached only in builds without one of the cloud features.
            #[allow(unreachable_patterns)]
            "gcp" | "aws" | "azure" => {
                bail!("CLOUD={cloud}: this build was compiled without the {cloud} feature")
            }
            other => bail!("CLOUD: unknown cloud {other:?}; expected kind, gcp, aws or azure"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    /// A complete kind configuration.
    const KIND: [&str; 8] = [
        "--cloud",
        "kind",
        "--s3-endpoint",
        "http://127.0.0.1:9000",
        "--s3-access-key-id",
        "k",
        "--s3-secret-access-key",
        "s",
    ];

    fn args(a: &[&str]) -> RunArgs {
        T::try_parse_from(std::iter::once("t").chain(a.iter().copied()))
            .unwrap()
            .run
    }

    #[tokio::test]
    async fn missing_settings_are_named() {
        let err = args(&[]).cloud().await.err().unwrap().to_string();
        assert!(err.contains("CLOUD is required"), "{err}");
        let err = args(&["--cloud", "kind"])
            .cloud()
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("S3_ENDPOINT"), "{err}");
        let err = args(&["--cloud", "kind", "--s3-endpoint", "http://x"])
            .cloud()
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        let err = args(&["--cloud", "mars"])
            .cloud()
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown cloud"), "{err}");
    }

    #[tokio::test]
    async fn tenancy_is_shared_unless_set() {
        let c = args(&KIND).cloud().await.unwrap();
        assert_eq!(c.config().tenancy, substratus_core::cloud::Tenancy::Shared);
        let mut own = KIND.to_vec();
        own.extend(["--tenancy", "namespace"]);
        let c = args(&own).cloud().await.unwrap();
        assert_eq!(
            c.config().tenancy,
            substratus_core::cloud::Tenancy::Namespace
        );
        assert_eq!(
            c.config().namespace_folder("a").to_string(),
            "s3://substratus-artifacts/namespaces/a"
        );
        let err = T::try_parse_from(["t", "--tenancy", "teams"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--tenancy") && err.contains("namespace"),
            "{err}"
        );
    }

    /// What AKS needs with namespace tenancy is named when missing.
    #[cfg(feature = "azure")]
    #[tokio::test]
    async fn azure_namespace_tenancy_names_what_it_needs() {
        let aks = |registry: &'static str, extra: &[&'static str]| {
            let mut all = vec![
                "--cloud",
                "azure",
                "--tenancy",
                "namespace",
                "--cluster-name",
                "aks1",
                "--artifact-bucket-url",
                "az://artifacts",
                "--registry-url",
                registry,
                "--azure-subscription-id",
                "sub-1",
                "--azure-resource-group",
                "rg-1",
                "--azure-storage-account",
                "acct",
                "--azure-identity-name",
                "substratus",
                "--oidc-issuer",
                "https://issuer/",
                "--azure-client-id",
                "operator",
                "--azure-tenant-id",
                "tenant",
                "--azure-federated-token-file",
                "/var/run/token",
            ];
            all.extend_from_slice(extra);
            args(&all)
        };
        let registry = "subx.azurecr.io/substratus";
        let err = |a: RunArgs| async move { a.cloud().await.err().unwrap().to_string() };
        let e = err(aks(registry, &[])).await;
        assert!(e.starts_with("AZURE_LOCATION:"), "{e}");
        let located = ["--azure-location", "eastus"];
        let claims = [&located[..], &["--azure-blob-volumes", "claims"]].concat();
        let e = err(aks(registry, &claims)).await;
        assert!(e.starts_with("AZURE_BLOB_VOLUMES=claims:"), "{e}");
        let e = err(aks("gcr.io/p/r", &located)).await;
        assert!(e.starts_with("REGISTRY_URL:"), "{e}");
        let e = T::try_parse_from(["t", "--azure-blob-volumes", "pvc"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("AZURE_BLOB_VOLUMES"), "{e}");
        // Complete: no PRINCIPAL needed, each namespace's identity is made.
        let c = aks(registry, &located).cloud().await.unwrap();
        assert_eq!(
            c.config().tenancy,
            substratus_core::cloud::Tenancy::Namespace
        );
        assert_eq!(
            c.image_url(substratus_core::names::Kind::Model, "team-a", "m", "t"),
            "subx.azurecr.io/substratus/team-a/aks1-model-team-a__m:t"
        );
    }

    #[test]
    fn the_resync_period_defaults_to_ten_minutes_and_refuses_a_hot_loop() {
        assert_eq!(args(&[]).resync_seconds, 600);
        assert_eq!(args(&["--resync-seconds", "60"]).resync_seconds, 60);
        let err = T::try_parse_from(["t", "--resync-seconds", "1"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--resync-seconds"), "{err}");
        assert!(err.contains("not in 10..=86400"), "{err}");
    }

    #[test]
    fn worker_threads_default_to_one_per_core() {
        assert_eq!(args(&[]).worker_threads, 0);
        assert_eq!(args(&["--worker-threads", "1"]).worker_threads, 1);
        let err = T::try_parse_from(["t", "--worker-threads", "300"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--worker-threads"), "{err}");
    }

    #[tokio::test]
    async fn a_complete_kind_configuration_builds() {
        let mut kind = KIND.to_vec();
        kind.extend(["--cluster-name", "dev", "--gpu-catalog", "gcp"]);
        let a = args(&kind);
        let c = a.cloud().await.unwrap();
        assert_eq!(c.name(), "kind");
        assert_eq!(c.config().cluster_name, "dev");
        // The GKE catalogue was chosen: an L4 selects the GKE accelerator label.
        let p = c
            .gpu_placement(Some(substratus_crds::GpuType::NvidiaL4), 1)
            .unwrap();
        assert_eq!(
            p.node_selector["cloud.google.com/gke-accelerator"],
            "nvidia-l4"
        );
    }

    #[tokio::test]
    async fn each_cloud_builds_from_its_settings_or_names_what_is_missing() {
        let gcp = args(&[
            "--cloud",
            "gcp",
            "--project-id",
            "p1",
            "--cluster-name",
            "c1",
            "--cluster-location",
            "europe-west4-b",
        ])
        .cloud()
        .await
        .unwrap();
        assert_eq!(gcp.name(), "gcp");
        assert_eq!(
            gcp.config().registry,
            "europe-west4-docker.pkg.dev/p1/substratus"
        );
        let err = args(&["--cloud", "aws"])
            .cloud()
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("CLUSTER_NAME"), "{err}");
        let aws = args(&[
            "--cloud",
            "aws",
            "--cluster-name",
            "e1",
            "--aws-region",
            "eu-west-1",
            "--aws-account-id",
            "111122223333",
            "--aws-identity-mode",
            "pod-identity",
        ])
        .cloud()
        .await
        .unwrap();
        assert_eq!(aws.name(), "aws");
        assert_eq!(
            aws.config().registry,
            "111122223333.dkr.ecr.eu-west-1.amazonaws.com/substratus"
        );
        let err = args(&[
            "--cloud",
            "azure",
            "--cluster-name",
            "a1",
            "--azure-subscription-id",
            "s",
            "--azure-resource-group",
            "g",
        ])
        .cloud()
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("REGISTRY_URL"), "{err}");
    }
}
