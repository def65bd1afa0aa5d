//! Auto-configuration on AKS: subscription and resource group from the Azure Instance Metadata
//! Service (`/metadata/instance`, header `Metadata: true`); the token exchange from the
//! variables the workload identity webhook injects.

use std::path::PathBuf;

use substratus_core::cloud::{BucketUrl, CloudConfig};

use super::token::WorkloadIdentityToken;
use super::{AzureCloud, AzureSettings, StorageAuth};
use crate::gpu::GpuCatalog;

/// Settings as given; `None` = discover or default.
#[derive(Clone, Debug, Default)]
pub struct AzureInputs {
    pub cluster_name: Option<String>,
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub storage_account: Option<String>,
    pub storage_key: Option<String>,
    pub blob_endpoint: Option<String>,
    pub identity_name: Option<String>,
    pub oidc_issuer: Option<String>,
    pub artifact_bucket_url: Option<String>,
    pub registry_url: Option<String>,
    /// The managed identity's client id; default `AZURE_CLIENT_ID`.
    pub principal: Option<String>,
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub authority_host: Option<String>,
    pub arm_endpoint: Option<String>,
    /// Default `http://169.254.169.254`.
    pub imds_endpoint: Option<String>,
    pub tenancy: substratus_core::cloud::Tenancy,
    /// `AZURE_BLOB_VOLUMES`; default inline with namespace tenancy, claims otherwise.
    pub blob_volumes: Option<super::BlobVolumes>,
    /// `AZURE_LOCATION`: region of the namespaces' identities (namespace tenancy).
    pub location: Option<String>,
    /// `AZURE_IDENTITY_RESOURCE_GROUP`: where the namespaces' identities go (default
    /// `AZURE_RESOURCE_GROUP`).
    pub identity_resource_group: Option<String>,
}

/// Subscription and resource group of the VM (node) the operator runs on.
pub async fn imds(endpoint: &str) -> Result<(String, String), String> {
    let url = format!(
        "{}/metadata/instance?api-version=2021-02-01",
        endpoint.trim_end_matches('/')
    );
    let v = crate::rest::json_found(
        crate::rest::client()?.get(&url).header("Metadata", "true"),
        "Azure IMDS",
    )
    .await
    .map_err(|e| e.to_string())?;
    let get = |k: &str| {
        v["compute"][k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("Azure IMDS: no compute.{k}"))
    };
    Ok((get("subscriptionId")?, get("resourceGroupName")?))
}

fn need(v: &Option<String>, env: &str) -> Result<String, String> {
    v.clone()
        .filter(|x| !x.is_empty())
        .ok_or_else(|| format!("{env} is required on azure"))
}

/// The Azure backend from explicit settings and IMDS.
pub async fn configure(i: AzureInputs, gpus: GpuCatalog) -> Result<AzureCloud, String> {
    let (subscription_id, resource_group) = match (&i.subscription_id, &i.resource_group) {
        (Some(s), Some(r)) => (s.clone(), r.clone()),
        _ => {
            let endpoint = i
                .imds_endpoint
                .clone()
                .unwrap_or_else(|| "http://169.254.169.254".into());
            let (s, r) = imds(&endpoint).await.map_err(|e| {
                format!(
                    "AZURE_SUBSCRIPTION_ID or AZURE_RESOURCE_GROUP is not set and {e}; set them"
                )
            })?;
            (
                i.subscription_id.clone().unwrap_or(s),
                i.resource_group.clone().unwrap_or(r),
            )
        }
    };
    let http = crate::rest::client()?;
    let token = match (&i.client_id, &i.tenant_id, &i.federated_token_file) {
        (Some(c), Some(t), Some(f)) => Some(WorkloadIdentityToken::new(
            i.authority_host
                .as_deref()
                .unwrap_or("https://login.microsoftonline.com"),
            t,
            c,
            f.clone(),
            http,
        )),
        _ => None,
    };
    let storage_auth = match &i.storage_key {
        Some(k) if !k.is_empty() => StorageAuth::SharedKey(k.clone()),
        _ => StorageAuth::WorkloadIdentity,
    };
    let namespace_tenancy = i.tenancy == substratus_core::cloud::Tenancy::Namespace;
    let config = CloudConfig {
        cluster_name: need(&i.cluster_name, "CLUSTER_NAME")?,
        artifact_bucket: BucketUrl::parse(
            i.artifact_bucket_url
                .as_deref()
                .unwrap_or("az://substratus-artifacts"),
        )
        .map_err(|e| format!("ARTIFACT_BUCKET_URL: {e}"))?,
        registry: need(&i.registry_url, "REGISTRY_URL (e.g. myregistry.azurecr.io)")?,
        // With namespace tenancy each namespace's identity is made by the operator.
        principal: if namespace_tenancy {
            i.principal.clone()
        } else {
            Some(i.principal.clone().or_else(|| i.client_id.clone()).ok_or(
                "PRINCIPAL (or AZURE_CLIENT_ID) is required on azure: the managed identity's client id",
            )?)
        },
        tenancy: i.tenancy,
    };
    let namespaces = match (namespace_tenancy, &i.location) {
        (true, Some(location)) if !location.is_empty() => Some(super::NamespaceSettings {
            identity_resource_group: i
                .identity_resource_group
                .clone()
                .filter(|g| !g.is_empty())
                .unwrap_or_else(|| resource_group.clone()),
            location: location.clone(),
        }),
        _ => None,
    };
    let settings = AzureSettings {
        storage_account: need(&i.storage_account, "AZURE_STORAGE_ACCOUNT")?,
        blob_endpoint: i.blob_endpoint.clone(),
        storage_auth,
        subscription_id,
        resource_group,
        identity_name: need(&i.identity_name, "AZURE_IDENTITY_NAME")?,
        oidc_issuer: need(
            &i.oidc_issuer,
            "OIDC_ISSUER (az aks show --query oidcIssuerProfile.issuerUrl)",
        )?,
        arm_endpoint: i
            .arm_endpoint
            .clone()
            .unwrap_or_else(|| "https://management.azure.com".into()),
        token,
        volumes: i.blob_volumes.unwrap_or(if namespace_tenancy {
            super::BlobVolumes::Inline
        } else {
            super::BlobVolumes::Claims
        }),
        namespaces,
    };
    AzureCloud::new(config, settings, gpus)
}
