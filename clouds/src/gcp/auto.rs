//! Auto-configuration on GKE: whatever the environment leaves unset is read from the GCE
//! metadata server; the original's defaults follow from the project and location.

use substratus_core::cloud::{BucketUrl, CloudConfig, Tenancy};

use super::{GcpCloud, GcpSettings, metadata};
use crate::gpu::GpuCatalog;

/// Settings as given (environment or flags); `None` = discover or default.
#[derive(Clone, Debug, Default)]
pub struct GcpInputs {
    pub project: Option<String>,
    /// Needed with namespace tenancy only.
    pub project_number: Option<String>,
    pub tenancy: Tenancy,
    pub cluster_name: Option<String>,
    pub cluster_location: Option<String>,
    pub artifact_bucket_url: Option<String>,
    pub registry_url: Option<String>,
    pub principal: Option<String>,
    /// Default: `$GCE_METADATA_HOST` or `metadata.google.internal`.
    pub metadata_endpoint: Option<String>,
}

/// The GCP backend from explicit settings and the metadata server.
pub async fn configure(i: GcpInputs, gpus: GpuCatalog) -> Result<GcpCloud, String> {
    let endpoint = i
        .metadata_endpoint
        .clone()
        .unwrap_or_else(metadata::default_endpoint);
    let needs_metadata = i.project.is_none()
        || i.cluster_name.is_none()
        || (i.registry_url.is_none() && i.cluster_location.is_none())
        || (i.tenancy == Tenancy::Namespace && i.project_number.is_none());
    let found = if needs_metadata {
        let m = metadata::Metadata::new(&endpoint, crate::rest::client()?);
        Some(m.discover().await.map_err(|e| {
            format!(
                "PROJECT_ID, CLUSTER_NAME, CLUSTER_LOCATION or PROJECT_NUMBER is not set and the GCE metadata server at {endpoint} did not answer ({e}); set them, or run on GKE"
            )
        })?)
    } else {
        None
    };
    let pick = |given: &Option<String>, from: Option<&Option<String>>, env: &str| {
        given
            .clone()
            .or_else(|| from.and_then(|f| f.clone()))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{env} is not set and the metadata server does not know it"))
    };
    let project = pick(&i.project, found.as_ref().map(|f| &f.project), "PROJECT_ID")?;
    let cluster_name = pick(
        &i.cluster_name,
        found.as_ref().map(|f| &f.cluster_name),
        "CLUSTER_NAME",
    )?;
    let registry = match &i.registry_url {
        Some(r) => r.clone(),
        None => {
            let location = pick(
                &i.cluster_location,
                found.as_ref().map(|f| &f.cluster_location),
                "CLUSTER_LOCATION",
            )?;
            let region = metadata::region_of(&location).ok_or_else(|| {
                format!(
                    "CLUSTER_LOCATION {location:?} is not a GCP region or zone; set REGISTRY_URL"
                )
            })?;
            format!("{region}-docker.pkg.dev/{project}/substratus")
        }
    };
    let bucket = i
        .artifact_bucket_url
        .clone()
        .unwrap_or_else(|| format!("gs://{project}-substratus-artifacts"));
    let config = CloudConfig {
        cluster_name,
        artifact_bucket: BucketUrl::parse(&bucket)
            .map_err(|e| format!("ARTIFACT_BUCKET_URL: {e}"))?,
        registry,
        principal: Some(
            i.principal
                .clone()
                .unwrap_or_else(|| format!("substratus@{project}.iam.gserviceaccount.com")),
        ),
        tenancy: i.tenancy,
    };
    let mut settings = GcpSettings::public(&project);
    settings.metadata_endpoint = endpoint;
    settings.project_number = i
        .project_number
        .clone()
        .or_else(|| found.as_ref().and_then(|f| f.project_number.clone()));
    GcpCloud::new(config, settings, gpus)
}
