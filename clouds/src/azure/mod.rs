//! The Azure backend (AKS): artifacts in Blob Storage mounted by the Blob CSI driver
//! (blobfuse2, static PersistentVolume per prefix, mounted with the workload identity), uploads
//! through a SAS for one blob (a user-delegation SAS under workload identity, a shared-key SAS
//! with an account key), workload identity through federated identity credentials on the
//! user-assigned managed identity, images in ACR. The builder reads the uploaded context from
//! a read-only mount (kaniko's Azure Blob context needs an account key, which workload identity
//! does not have) and pushes to ACR with kaniko's ACR credential helper and the identity's
//! token.
//!
//! A SAS cannot carry the md5: Azure computes `Content-MD5` for a single-shot Put Blob and
//! refuses a body whose `Content-MD5` header does not match; we read the stored `Content-MD5`
//! back and compare before building.
//!
//! Which crate serves what: `azure_storage_blobs` 0.21 (blob properties, reads, shared-key and
//! user-delegation SAS) — its successor `azure_storage_blob` 1.x accepts only Entra ID tokens
//! and user-delegation SAS, so it could not talk to Azurite's shared key or to accounts that
//! use keys; ARM (federated credentials) and the Entra token exchange go through `reqwest`.

pub mod auto;
pub mod fic;
pub mod token;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::StatusCode;
use azure_storage::StorageCredentials;
use azure_storage::shared_access_signature::service_sas::BlobSasPermissions;
use azure_storage_blobs::prelude::{BlobClient, BlobServiceClient, ClientBuilder};
use futures::StreamExt;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use substratus_core::cloud::{
    Access, ArtifactPrefix, BucketUrl, BucketVolume, Cloud, CloudConfig, CloudError, GpuPlacement,
    PrefixFolder, SignedUrl, UploadContext, folder_prefix, in_bucket, mirrored_key,
};
use substratus_core::conditions::reasons;
use substratus_core::names::Role;
use substratus_crds::GpuType;

use crate::gpu::GpuCatalog;
use crate::rest;
use crate::static_pv;

/// The Azure Blob CSI driver.
pub const BLOB_CSI_DRIVER: &str = "blob.csi.azure.com";
/// Service-account annotation naming the managed identity's client id.
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// Pod label that makes the workload identity webhook inject the token.
pub const USE_LABEL: &str = "azure.workload.identity/use";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const FIC_API_VERSION: &str = "2023-01-31";

/// How the operator reaches Blob Storage.
#[derive(Clone, Debug)]
pub enum StorageAuth {
    /// An account key (Azurite, or accounts that allow keys): shared-key SAS.
    SharedKey(String),
    /// The operator's workload identity: user-delegation SAS.
    WorkloadIdentity,
}

/// Settings of the Azure backend.
#[derive(Clone, Debug)]
pub struct AzureSettings {
    pub storage_account: String,
    /// Blob endpoint including the account (Azurite: `http://127.0.0.1:10000/devstoreaccount1`);
    /// default `https://<account>.blob.core.windows.net`.
    pub blob_endpoint: Option<String>,
    pub storage_auth: StorageAuth,
    pub subscription_id: String,
    pub resource_group: String,
    /// Name of the user-assigned managed identity workloads run as.
    pub identity_name: String,
    /// The cluster's OIDC issuer.
    pub oidc_issuer: String,
    /// `https://management.azure.com`.
    pub arm_endpoint: String,
    /// Tokens for ARM (and storage under workload identity).
    pub token: Option<token::WorkloadIdentityToken>,
}

/// The Azure backend.
pub struct AzureCloud {
    config: CloudConfig,
    settings: AzureSettings,
    gpus: GpuCatalog,
    service: BlobServiceClient,
    http: reqwest::Client,
    /// The managed identity's client id.
    client_id: String,
}

fn azure_error(what: &str, e: azure_core::Error) -> CloudError {
    let message = format!("{what}: {e}");
    match e.as_http_error().map(|h| h.status()) {
        Some(StatusCode::Forbidden | StatusCode::Unauthorized | StatusCode::BadRequest) => {
            CloudError::Permanent {
                reason: reasons::CLOUD_ERROR,
                message,
            }
        }
        _ => CloudError::Transient(message),
    }
}

impl AzureCloud {
    /// The settings this backend runs with (after auto-configuration).
    pub fn settings(&self) -> &AzureSettings {
        &self.settings
    }

    pub fn new(
        config: CloudConfig,
        settings: AzureSettings,
        gpus: GpuCatalog,
    ) -> Result<AzureCloud, String> {
        config.require_scheme("azure", "az")?;
        let client_id = config.principal.clone().ok_or(
            "PRINCIPAL: the azure backend needs the client id of the managed identity workloads run as",
        )?;
        let credentials = match &settings.storage_auth {
            StorageAuth::SharedKey(key) => {
                StorageCredentials::access_key(settings.storage_account.clone(), key.clone())
            }
            StorageAuth::WorkloadIdentity => {
                let t = settings.token.clone().ok_or(
                    "AZURE_FEDERATED_TOKEN_FILE: workload identity storage access needs the federated token (or set AZURE_STORAGE_KEY)",
                )?;
                StorageCredentials::token_credential(Arc::new(t))
            }
        };
        let location = match &settings.blob_endpoint {
            Some(uri) => azure_storage::CloudLocation::Custom {
                account: settings.storage_account.clone(),
                uri: uri.trim_end_matches('/').to_owned(),
            },
            None => azure_storage::CloudLocation::Public {
                account: settings.storage_account.clone(),
            },
        };
        let http = rest::client()?;
        let service = ClientBuilder::with_location(location, credentials)
            .transport(transport::Transport::options(http.clone()))
            .blob_service_client();
        Ok(AzureCloud {
            config,
            settings,
            gpus,
            service,
            http,
            client_id,
        })
    }

    fn blob(&self, key: &str) -> BlobClient {
        self.service
            .container_client(self.config.artifact_bucket.bucket.clone())
            .blob_client(key)
    }

    async fn md5_by_reading(&self, key: &str) -> Result<String, CloudError> {
        let mut stream = self.blob(key).get().into_stream();
        let mut hasher = Md5::new();
        while let Some(part) = stream.next().await {
            let part = part.map_err(|e| azure_error(&format!("reading {key}"), e))?;
            let data = part
                .data
                .collect()
                .await
                .map_err(|e| azure_error(&format!("reading {key}"), e))?;
            hasher.update(&data);
        }
        Ok(substratus_core::names::hex(&hasher.finalize()))
    }

    /// Copies blob `from` to `to` with Copy Blob, which the service may finish later:
    /// waits (bounded) until the copy's status is `success`.
    async fn copy_blob(&self, from: &str, to: &str) -> Result<(), CloudError> {
        use azure_storage_blobs::blob::CopyStatus;
        let what = format!("copying {from} to {to}");
        let source = self.blob(from).url().map_err(|e| azure_error(&what, e))?;
        let target = self.blob(to);
        let started = target
            .copy(source)
            .await
            .map_err(|e| azure_error(&what, e))?;
        let mut status = started.copy_status;
        for _ in 0..600 {
            match status {
                CopyStatus::Success => return Ok(()),
                CopyStatus::Pending => {}
                other => {
                    return Err(CloudError::Transient(format!(
                        "{what}: the copy ended {other:?}"
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let props = target
                .get_properties()
                .await
                .map_err(|e| azure_error(&what, e))?;
            status = props
                .blob
                .properties
                .copy_status
                .unwrap_or(CopyStatus::Success);
        }
        Err(CloudError::Transient(format!(
            "{what}: still pending after 2 minutes"
        )))
    }

    fn identity_url(&self) -> String {
        let s = &self.settings;
        format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}/federatedIdentityCredentials",
            s.arm_endpoint.trim_end_matches('/'),
            rest::segment(&s.subscription_id),
            rest::segment(&s.resource_group),
            rest::segment(&s.identity_name)
        )
    }

    async fn arm_token(&self) -> Result<String, CloudError> {
        let t = self.settings.token.as_ref().ok_or_else(|| CloudError::Permanent {
            reason: reasons::CLOUD_ERROR,
            message: "binding workload identity needs the operator's own workload identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID)".into(),
        })?;
        Ok(t.token(ARM_SCOPE).await?.secret)
    }

    /// A static Blob CSI volume for `url` and its claim in `namespace`.
    fn claim_objects(&self, namespace: &str, url: &BucketUrl) -> Vec<Value> {
        let mut options = vec![
            "-o allow_other".to_owned(),
            "--virtual-directory=true".into(),
        ];
        if !url.path.is_empty() {
            options.push(format!("--subdirectory={}/", url.path));
        }
        static_pv::objects(
            namespace,
            url,
            static_pv::CsiSource {
                driver: BLOB_CSI_DRIVER.into(),
                volume_handle: static_pv::volume_name(namespace, url),
                volume_attributes: json!({
                    "storageAccount": self.settings.storage_account,
                    "containerName": url.bucket,
                    "resourceGroup": self.settings.resource_group,
                    "protocol": "fuse2",
                    // Mount with the workload identity, not an account key.
                    "clientID": self.client_id,
                }),
                secret_ref: None,
                mount_options: options,
            },
        )
    }
}

#[async_trait]
impl Cloud for AzureCloud {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn config(&self) -> &CloudConfig {
        &self.config
    }

    fn bucket_volume(
        &self,
        folder: &PrefixFolder,
        access: Access,
    ) -> Result<BucketVolume, CloudError> {
        Ok(static_pv::claim_volume(&folder.url, access))
    }

    fn prefix_objects(&self, prefix: &ArtifactPrefix) -> Vec<Value> {
        self.claim_objects(&prefix.namespace, &prefix.artifacts().url)
    }

    fn upload_context(&self, prefix: &ArtifactPrefix) -> Result<UploadContext, CloudError> {
        Ok(static_pv::claimed_upload_context(prefix, |ns, url| {
            self.claim_objects(ns, url)
        }))
    }

    fn gpu_placement(
        &self,
        gpu_type: Option<GpuType>,
        _count: i64,
    ) -> Result<GpuPlacement, CloudError> {
        self.gpus.placement(gpu_type)
    }

    fn service_account_annotations(&self, _role: Role) -> BTreeMap<String, String> {
        BTreeMap::from([(CLIENT_ID_ANNOTATION.to_owned(), self.client_id.clone())])
    }

    fn pod_identity_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(USE_LABEL.to_owned(), "true".to_owned())])
    }

    async fn bind_identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<String>, CloudError> {
        let token = self.arm_token().await?;
        let list = rest::json_found(
            self.http
                .get(format!(
                    "{}?api-version={FIC_API_VERSION}",
                    self.identity_url()
                ))
                .bearer_auth(&token),
            "listing the federated credentials of the managed identity",
        )
        .await?;
        let existing = list["value"].as_array().cloned().unwrap_or_default();
        let subject = format!("system:serviceaccount:{namespace}:{service_account}");
        let issuer = &self.settings.oidc_issuer;
        match fic::plan(
            &existing,
            issuer,
            &subject,
            fic::credential_name(namespace, service_account),
        ) {
            fic::Plan::Bound => Ok(Some(self.client_id.clone())),
            fic::Plan::Full { count } => Err(CloudError::Permanent {
                reason: reasons::CLOUD_ERROR,
                message: format!(
                    "managed identity {} has {count} federated credentials, the most Azure allows ({}); {subject} cannot be bound — remove unused ones or use another identity for this namespace",
                    self.settings.identity_name,
                    fic::MAX_PER_IDENTITY
                ),
            }),
            fic::Plan::Create { name } => {
                rest::json_found(
                    self.http
                        .put(format!(
                            "{}/{}?api-version={FIC_API_VERSION}",
                            self.identity_url(),
                            rest::segment(&name)
                        ))
                        .bearer_auth(&token)
                        .json(&json!({"properties": {
                            "issuer": issuer,
                            "subject": subject,
                            "audiences": [fic::AUDIENCE],
                        }})),
                    "creating a federated credential on the managed identity",
                )
                .await?;
                Ok(Some(self.client_id.clone()))
            }
        }
    }

    async fn copy_folder(&self, from: &BucketUrl, to: &BucketUrl) -> Result<usize, CloudError> {
        in_bucket(&self.config, from)?;
        in_bucket(&self.config, to)?;
        let mut keys = Vec::new();
        let mut pages = self
            .service
            .container_client(self.config.artifact_bucket.bucket.clone())
            .list_blobs()
            .prefix(folder_prefix(from))
            .into_stream();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| azure_error(&format!("listing {from}"), e))?;
            keys.extend(page.blobs.blobs().map(|b| b.name.clone()));
        }
        let mut copied = 0;
        for key in keys {
            let Some(target) = mirrored_key(from, to, &key) else {
                continue;
            };
            self.copy_blob(&key, &target).await?;
            copied += 1;
        }
        Ok(copied)
    }

    async fn stored_md5(&self, key: &str) -> Result<Option<String>, CloudError> {
        match self.blob(key).get_properties().await {
            Ok(p) => match p.blob.properties.content_md5 {
                Some(md5) => Ok(Some(substratus_core::names::hex(md5.as_slice()))),
                None => self.md5_by_reading(key).await.map(Some),
            },
            Err(e)
                if e.as_http_error()
                    .is_some_and(|h| h.status() == StatusCode::NotFound) =>
            {
                Ok(None)
            }
            Err(e) => Err(azure_error(&format!("reading the properties of {key}"), e)),
        }
    }

    async fn signed_upload_url(
        &self,
        key: &str,
        md5_hex: &str,
        ttl: Duration,
    ) -> Result<SignedUrl, CloudError> {
        // Validate the md5 the same way as elsewhere (a SAS cannot carry it).
        crate::checksum::md5_base64(md5_hex)?;
        let now = time::OffsetDateTime::now_utc();
        let expiry = now + ttl;
        let permissions = BlobSasPermissions {
            create: true,
            write: true,
            ..Default::default()
        };
        let blob = self.blob(key);
        let sas = match &self.settings.storage_auth {
            StorageAuth::SharedKey(_) => blob
                .shared_access_signature(permissions, expiry)
                .await
                .map_err(|e| azure_error("signing the upload URL", e))?,
            StorageAuth::WorkloadIdentity => {
                let key = self
                    .service
                    .get_user_deligation_key(now - Duration::from_secs(300), expiry)
                    .await
                    .map_err(|e| azure_error("getting a user delegation key", e))?;
                blob.user_delegation_shared_access_signature(permissions, &key.user_deligation_key)
                    .await
                    .map_err(|e| azure_error("signing the upload URL", e))?
            }
        };
        let url = blob
            .generate_signed_blob_url(&sas)
            .map_err(|e| azure_error("signing the upload URL", e))?;
        Ok(SignedUrl {
            url: url.to_string(),
            expires_at_unix: expiry.unix_timestamp(),
        })
    }
}
