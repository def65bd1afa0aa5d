//! The Azure backend (AKS): artifacts in Blob Storage mounted by the Blob CSI driver
//! (blobfuse2: inline volumes, or a static PersistentVolume of each namespace's folder which
//! pods mount by subPath; with the workload identity), uploads through a SAS for one blob (a
//! user-delegation SAS under workload identity, a shared-key SAS with an account key),
//! workload identity through federated identity credentials on the user-assigned managed
//! identity, images in ACR. The builder reads the uploaded context from
//! a read-only mount (kaniko's Azure Blob context needs an account key, which workload identity
//! does not have) and pushes to ACR with kaniko's ACR credential helper and the identity's
//! token.
//!
//! A SAS cannot carry the md5: Azure computes `Content-MD5` for a single-shot Put Blob and
//! refuses a body whose `Content-MD5` header does not match; we read the stored `Content-MD5`
//! back and compare before building.
//!
//! With `TENANCY=namespace` each namespace gets a managed identity of its own, created by the
//! operator and granted only the namespace's folder and repositories ([`tenancy`]); pods
//! mount prefixes with inline volumes that the blob CSI driver mounts with the pod's own
//! workload identity token, so a namespace's mounts are its identity's.
//!
//! Which crate serves what: `azure_storage_blobs` 0.21 (blob properties, reads, shared-key and
//! user-delegation SAS) — its successor `azure_storage_blob` 1.x accepts only Entra ID tokens
//! and user-delegation SAS, so it could not talk to Azurite's shared key or to accounts that
//! use keys; ARM (federated credentials) and the Entra token exchange go through `reqwest`.

pub mod arm;
pub mod auto;
pub mod fic;
pub mod tenancy;
pub mod token;
pub mod transport;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::StatusCode;
use azure_storage::StorageCredentials;
use azure_storage::shared_access_signature::service_sas::BlobSasPermissions;
use azure_storage_blobs::prelude::{BlobClient, BlobServiceClient, ClientBuilder};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{CSIVolumeSource, Volume};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use substratus_core::cloud::{
    Access, ArtifactPrefix, BucketUrl, BucketVolume, Cloud, CloudConfig, CloudError, GpuPlacement,
    PrefixFolder, SignedUrl, Tenancy, UploadContext, folder_prefix, in_bucket, mirrored_key,
};
use substratus_core::conditions::reasons;
use substratus_core::names::{Kind, Role};
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

/// How pods mount the prefixes of objects (`AZURE_BLOB_VOLUMES`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlobVolumes {
    /// A read-only and a read-write static PersistentVolume and claim per namespace, of the
    /// namespace's folder, mounted with the `PRINCIPAL` identity; pods mount their objects'
    /// folders by `subPath`, and only a namespace's first pods wait for a binding.
    #[default]
    Claims,
    /// Inline blob CSI volumes, mounted with the pod's own workload identity token
    /// (`mountWithWorkloadIdentityToken`, blob CSI driver 1.27 or later): no claim to bind,
    /// and a namespace's mounts are its own identity's.
    Inline,
}

impl std::str::FromStr for BlobVolumes {
    type Err = String;
    fn from_str(s: &str) -> Result<BlobVolumes, String> {
        match s {
            "claims" => Ok(BlobVolumes::Claims),
            "inline" => Ok(BlobVolumes::Inline),
            other => Err(format!(
                "AZURE_BLOB_VOLUMES: {other:?} is not a volume mode; expected inline (mounted \
                 with each pod's workload identity; blob CSI driver 1.27+) or claims (a static \
                 volume and claim per namespace, mounted by subPath)"
            )),
        }
    }
}

/// Where the operator makes each namespace's managed identity (`TENANCY=namespace`).
#[derive(Clone, Debug)]
pub struct NamespaceSettings {
    /// The resource group the identities are created in (one of their own is best: the
    /// operator may manage every identity there).
    pub identity_resource_group: String,
    /// Their region.
    pub location: String,
}

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
    /// How pods mount prefixes.
    pub volumes: BlobVolumes,
    /// With namespace tenancy: where each namespace's identity is made.
    pub namespaces: Option<NamespaceSettings>,
}

/// Namespace tenancy: what the identities are granted, and the identities made so far.
struct Tenants {
    settings: NamespaceSettings,
    scopes: tenancy::Scopes,
    identities: RwLock<HashMap<String, arm::Identity>>,
    /// Serialises making identities, so that concurrent reconciles make each once.
    making: tokio::sync::Mutex<()>,
}

/// The Azure backend.
pub struct AzureCloud {
    config: CloudConfig,
    settings: AzureSettings,
    gpus: GpuCatalog,
    service: BlobServiceClient,
    http: reqwest::Client,
    /// The client id of the managed identity every namespace's workloads act as (shared
    /// tenancy); empty with namespace tenancy.
    client_id: String,
    tenants: Option<Tenants>,
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
        let tenants = match config.tenancy {
            Tenancy::Shared => None,
            Tenancy::Namespace => Some(Self::tenants(&config, &settings)?),
        };
        let client_id = match (&tenants, config.principal.clone()) {
            (Some(_), principal) => principal.unwrap_or_default(),
            (None, Some(principal)) => principal,
            (None, None) => {
                return Err(
                    "PRINCIPAL: the azure backend needs the client id of the managed \
                            identity workloads run as"
                        .into(),
                );
            }
        };
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
            tenants,
        })
    }

    /// What namespace tenancy needs, or which setting is missing.
    fn tenants(config: &CloudConfig, settings: &AzureSettings) -> Result<Tenants, String> {
        let ns = settings.namespaces.clone().ok_or(
            "AZURE_LOCATION: TENANCY=namespace on azure creates a managed identity per \
             namespace and needs their region (and AZURE_IDENTITY_RESOURCE_GROUP, where they go)",
        )?;
        if settings.volumes != BlobVolumes::Inline {
            return Err(
                "AZURE_BLOB_VOLUMES=claims: TENANCY=namespace on azure needs inline \
                        volumes, which the blob CSI driver mounts with each pod's own identity; \
                        a static volume names one identity for good"
                    .into(),
            );
        }
        if settings.token.is_none() {
            return Err(
                "AZURE_FEDERATED_TOKEN_FILE: TENANCY=namespace on azure needs the \
                        operator's own workload identity to make each namespace's identity"
                    .into(),
            );
        }
        if config.artifact_bucket.path.contains(['\'', ' ', ',']) {
            return Err(format!(
                "ARTIFACT_BUCKET_URL: {} holds a quote, space or comma, which a role \
                 assignment's condition or a mount option cannot carry",
                config.artifact_bucket
            ));
        }
        let (registry, repository) = tenancy::Scopes::registry_of(&config.registry)?;
        Ok(Tenants {
            scopes: tenancy::Scopes {
                subscription: settings.subscription_id.clone(),
                resource_group: settings.resource_group.clone(),
                storage_account: settings.storage_account.clone(),
                container: config.artifact_bucket.bucket.clone(),
                registry,
                repository,
            },
            settings: ns,
            identities: RwLock::default(),
            making: tokio::sync::Mutex::default(),
        })
    }

    /// The client id `namespace`'s workloads act as: the namespace's own identity with
    /// namespace tenancy (known once [`Cloud::prepare_namespace`] made it).
    fn client_of(&self, namespace: &str) -> Result<String, CloudError> {
        let Some(t) = &self.tenants else {
            return Ok(self.client_id.clone());
        };
        t.identities
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .map(|i| i.client_id.clone())
            .ok_or_else(|| {
                CloudError::Transient(format!(
                    "the managed identity of namespace {namespace} is not made yet"
                ))
            })
    }

    /// The managed identity the accounts of `namespace` are federated with.
    fn identity_of(&self, namespace: &str) -> (String, String) {
        let s = &self.settings;
        match &self.tenants {
            None => (s.resource_group.clone(), s.identity_name.clone()),
            Some(t) => (
                t.settings.identity_resource_group.clone(),
                tenancy::identity_name(&s.identity_name, namespace),
            ),
        }
    }

    /// An inline blob CSI volume of `url`, mounted with the workload identity token of the
    /// pod (of `namespace`) as the namespace's identity; only `url`'s folder is visible.
    fn inline_volume(
        &self,
        namespace: &str,
        url: &BucketUrl,
        access: Access,
    ) -> Result<Volume, CloudError> {
        let mut options = vec![
            "-o allow_other".to_owned(),
            "--virtual-directory=true".into(),
        ];
        if !url.path.is_empty() {
            options.push(format!("--subdirectory={}/", url.path));
        }
        if access == Access::ReadOnly {
            options.push("--read-only=true".into());
        }
        let attributes = [
            ("storageAccount", self.settings.storage_account.clone()),
            ("containerName", url.bucket.clone()),
            ("protocol", "fuse2".into()),
            ("clientID", self.client_of(namespace)?),
            ("mountWithWorkloadIdentityToken", "true".into()),
            ("mountOptions", options.join(" ")),
        ];
        Ok(Volume {
            csi: Some(CSIVolumeSource {
                driver: BLOB_CSI_DRIVER.into(),
                read_only: Some(access == Access::ReadOnly),
                volume_attributes: Some(
                    attributes
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn arm(&self) -> Result<arm::Arm<'_>, CloudError> {
        Ok(arm::Arm {
            http: &self.http,
            endpoint: &self.settings.arm_endpoint,
            token: self.arm_token().await?,
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

    async fn arm_token(&self) -> Result<String, CloudError> {
        let t = self.settings.token.as_ref().ok_or_else(|| CloudError::Permanent {
            reason: reasons::CLOUD_ERROR,
            message: "binding workload identity needs the operator's own workload identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID)".into(),
        })?;
        Ok(t.token(ARM_SCOPE).await?.secret)
    }

    /// The static Blob CSI volume of `folder` (a namespace's folder), read-only or
    /// read-write, mounted with the workload identity (`PRINCIPAL`).
    fn blob_source(
        &self,
        namespace: &str,
        folder: &BucketUrl,
        access: Access,
    ) -> static_pv::CsiSource {
        let mut options = vec![
            "-o allow_other".to_owned(),
            "--virtual-directory=true".into(),
        ];
        if !folder.path.is_empty() {
            options.push(format!("--subdirectory={}/", folder.path));
        }
        if access == Access::ReadOnly {
            options.push("--read-only=true".into());
        }
        static_pv::CsiSource {
            driver: BLOB_CSI_DRIVER.into(),
            volume_handle: static_pv::namespace_volume_name(namespace, folder, access),
            volume_attributes: json!({
                "storageAccount": self.settings.storage_account,
                "containerName": folder.bucket,
                "resourceGroup": self.settings.resource_group,
                "protocol": "fuse2",
                // Mount with the workload identity, not an account key.
                "clientID": self.client_id,
            }),
            secret_ref: None,
            mount_options: options,
        }
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
        Ok(match self.settings.volumes {
            BlobVolumes::Claims => {
                return static_pv::namespace_claim_volume(
                    &self.config.namespace_folder(&folder.namespace),
                    &folder.url,
                    access,
                );
            }
            BlobVolumes::Inline => BucketVolume {
                sub_path: None,
                volume: self.inline_volume(&folder.namespace, &folder.url, access)?,
                pod_annotations: Default::default(),
            },
        })
    }

    /// With claims, a read-only and a read-write static volume of the namespace's folder,
    /// each bound to its claim once; pods mount their objects' folders by `subPath`.
    fn namespace_objects(&self, namespace: &str) -> Vec<Value> {
        if self.settings.volumes != BlobVolumes::Claims {
            return Vec::new();
        }
        let folder = self.config.namespace_folder(namespace);
        static_pv::read_only_and_read_write(namespace, &folder, |access| {
            self.blob_source(namespace, &folder, access)
        })
    }

    fn upload_context(&self, prefix: &ArtifactPrefix) -> Result<UploadContext, CloudError> {
        Ok(match self.settings.volumes {
            BlobVolumes::Claims => static_pv::namespace_upload_context(
                &self.config.namespace_folder(&prefix.namespace),
                prefix,
                Access::ReadOnly,
            )?,
            BlobVolumes::Inline => {
                let uploads = prefix.uploads();
                static_pv::mounted_upload_context(
                    BucketVolume {
                        sub_path: None,
                        volume: self.inline_volume(
                            &uploads.namespace,
                            &uploads.url,
                            Access::ReadOnly,
                        )?,
                        pod_annotations: Default::default(),
                    },
                    Vec::new(),
                )
            }
        })
    }

    fn gpu_placement(
        &self,
        gpu_type: Option<GpuType>,
        _count: i64,
    ) -> Result<GpuPlacement, CloudError> {
        self.gpus.placement(gpu_type)
    }

    fn service_account_annotations(
        &self,
        namespace: &str,
        _role: Role,
    ) -> Result<BTreeMap<String, String>, CloudError> {
        Ok(BTreeMap::from([(
            CLIENT_ID_ANNOTATION.to_owned(),
            self.client_of(namespace)?,
        )]))
    }

    /// With namespace tenancy, the namespace's own identity (its client id).
    fn workload_principal(&self, namespace: &str) -> Option<String> {
        match &self.tenants {
            None => self.config.principal.clone(),
            Some(_) => self.client_of(namespace).ok(),
        }
    }

    /// With namespace tenancy, under the namespace's own path of the registry
    /// (`<repository>/<namespace>/…`), the only repositories its identity may push to.
    fn image_url(&self, kind: Kind, namespace: &str, name: &str, tag: &str) -> String {
        let c = &self.config;
        let registry = match &self.tenants {
            None => c.registry.clone(),
            Some(_) => format!("{}/{namespace}", c.registry.trim_end_matches('/')),
        };
        c.image_in(&registry, kind, namespace, name, tag)
    }

    /// With namespace tenancy: the namespace's managed identity, found or created in the
    /// identities' resource group, and its two role assignments (its folder of the container,
    /// its repositories of the registry), each read and written only when missing. Once per
    /// namespace for the operator's life.
    async fn prepare_namespace(&self, namespace: &str) -> Result<(), CloudError> {
        let Some(t) = &self.tenants else {
            return Ok(());
        };
        let known = |t: &Tenants| {
            t.identities
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(namespace)
        };
        if known(t) {
            return Ok(());
        }
        let _making = t.making.lock().await;
        if known(t) {
            return Ok(());
        }
        let arm = self.arm().await?;
        let (group, name) = self.identity_of(namespace);
        let identity = arm
            .namespace_identity(
                &self.settings.subscription_id,
                &group,
                &name,
                &t.settings.location,
                namespace,
            )
            .await?;
        let folder = self.config.namespace_folder(namespace);
        for grant in tenancy::grants(&t.scopes, namespace, &folder.path) {
            arm.ensure_grant(&t.scopes, &grant, &identity.principal_id, namespace)
                .await?;
        }
        tracing::info!(%namespace, identity = %name, client_id = %identity.client_id, "namespace identity ready");
        t.identities
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_owned(), identity);
        Ok(())
    }

    fn pod_identity_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(USE_LABEL.to_owned(), "true".to_owned())])
    }

    async fn bind_identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<String>, CloudError> {
        self.prepare_namespace(namespace).await?;
        let client_id = self.client_of(namespace)?;
        let arm = self.arm().await?;
        let (group, name) = self.identity_of(namespace);
        let path = arm::identity_path(&self.settings.subscription_id, &group, &name);
        let existing = arm.credentials(&path).await?;
        let subject = format!("system:serviceaccount:{namespace}:{service_account}");
        let issuer = &self.settings.oidc_issuer;
        match fic::plan(
            &existing,
            issuer,
            &subject,
            fic::credential_name(namespace, service_account),
        ) {
            fic::Plan::Bound => Ok(Some(client_id)),
            fic::Plan::Full { count } => Err(CloudError::Permanent {
                reason: reasons::CLOUD_ERROR,
                message: format!(
                    "managed identity {name} has {count} federated credentials, the most Azure allows ({}); {subject} cannot be bound — remove unused ones or use another identity for this namespace",
                    fic::MAX_PER_IDENTITY
                ),
            }),
            fic::Plan::Create { name } => {
                arm.create_credential(&path, &name, issuer, &subject)
                    .await?;
                Ok(Some(client_id))
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
