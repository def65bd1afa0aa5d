//! The GCP backend (GKE): artifacts in Cloud Storage mounted by the GCS FUSE CSI driver,
//! uploads through V4 signed URLs signed by the IAM Credentials `signBlob` API (no key file:
//! the operator's Google service account signs as itself under Workload Identity), Workload
//! Identity bindings through the IAM policy of the Google service account, images in
//! Artifact Registry. The builder pushes with kaniko's Google keychain, which reads the pod's
//! Workload Identity token from the GKE metadata server.
//!
//! Which crate serves what: Google's `google-cloud-storage` builds the signed URL (its V4
//! implementation) with a [`google_cloud_auth::signer::Signer`] that is our `signBlob` client;
//! the two JSON calls the reconciler needs (an object's `md5Hash`, the IAM policy) go through
//! `reqwest`, so every endpoint can be pointed at a local server.

pub mod auto;
pub mod iam;
pub mod metadata;
pub mod signer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{CSIVolumeSource, Volume};
use md5::{Digest, Md5};
use serde_json::json;
use substratus_core::cloud::{
    Access, ArtifactPrefix, BucketUrl, BucketVolume, Cloud, CloudConfig, CloudError, GpuPlacement,
    PrefixFolder, SignedUrl, UploadContext,
};
use substratus_core::names::Role;
use substratus_crds::GpuType;

use crate::checksum::{md5_base64, md5_hex_of_base64};
use crate::gpu::GpuCatalog;
use crate::rest;
use crate::static_pv;

/// The GCS FUSE CSI driver of GKE.
pub const GCSFUSE_DRIVER: &str = "gcsfuse.csi.storage.gke.io";
/// Pod annotation that makes GKE inject the GCS FUSE sidecar.
pub const GCSFUSE_ANNOTATION: &str = "gke-gcsfuse/volumes";
/// Annotation binding a Kubernetes service account to a Google service account.
pub const GSA_ANNOTATION: &str = "iam.gke.io/gcp-service-account";

/// Endpoints and identity of the GCP backend.
#[derive(Clone, Debug)]
pub struct GcpSettings {
    pub project: String,
    /// Cloud Storage JSON API, `https://storage.googleapis.com`.
    pub storage_endpoint: String,
    /// Endpoint put into signed URLs (default: `storage_endpoint`).
    pub signed_url_endpoint: Option<String>,
    /// IAM API (service account policies), `https://iam.googleapis.com`.
    pub iam_endpoint: String,
    /// IAM Credentials API (`signBlob`), `https://iamcredentials.googleapis.com`.
    pub iam_credentials_endpoint: String,
    /// GCE metadata server, for access tokens.
    pub metadata_endpoint: String,
}

impl GcpSettings {
    /// The public Google endpoints for `project`.
    pub fn public(project: &str) -> GcpSettings {
        GcpSettings {
            project: project.to_owned(),
            storage_endpoint: "https://storage.googleapis.com".into(),
            signed_url_endpoint: None,
            iam_endpoint: "https://iam.googleapis.com".into(),
            iam_credentials_endpoint: "https://iamcredentials.googleapis.com".into(),
            metadata_endpoint: metadata::default_endpoint(),
        }
    }
}

/// The GCP backend.
pub struct GcpCloud {
    config: CloudConfig,
    settings: GcpSettings,
    gpus: GpuCatalog,
    http: reqwest::Client,
    tokens: Arc<metadata::MetadataTokens>,
    signer: google_cloud_auth::signer::Signer,
    /// The Google service account workloads (and the signer) act as.
    principal: String,
}

impl GcpCloud {
    /// The settings this backend runs with (after auto-configuration).
    pub fn settings(&self) -> &GcpSettings {
        &self.settings
    }

    pub fn new(
        config: CloudConfig,
        settings: GcpSettings,
        gpus: GpuCatalog,
    ) -> Result<GcpCloud, String> {
        config.require_scheme("gcp", "gs")?;
        let principal = config.principal.clone().ok_or(
            "PRINCIPAL: the gcp backend needs the email of the Google service account workloads run as",
        )?;
        if !principal.contains('@') {
            return Err(format!(
                "PRINCIPAL: {principal:?} is not a Google service account email"
            ));
        }
        let http = rest::client()?;
        let tokens = Arc::new(metadata::MetadataTokens::new(&settings.metadata_endpoint));
        let signer = signer::IamSigner {
            email: principal.clone(),
            endpoint: settings.iam_credentials_endpoint.clone(),
            http: http.clone(),
            tokens: tokens.clone(),
        }
        .into();
        Ok(GcpCloud {
            config,
            settings,
            gpus,
            http,
            tokens,
            signer,
            principal,
        })
    }

    async fn token(&self) -> Result<String, CloudError> {
        self.tokens.get().await
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.settings.storage_endpoint.trim_end_matches('/'),
            rest::segment(&self.config.artifact_bucket.bucket),
            rest::segment(key)
        )
    }

    /// The hex MD5 of an object by reading it (composite objects have no `md5Hash`).
    async fn md5_by_reading(&self, key: &str) -> Result<String, CloudError> {
        let mut resp = self
            .http
            .get(format!("{}?alt=media", self.object_url(key)))
            .bearer_auth(self.token().await?)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| CloudError::Transient(format!("reading {key}: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(rest::status_error(&format!("reading {key}"), status, &body));
        }
        let mut hasher = Md5::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| CloudError::Transient(format!("reading {key}: {e}")))?
        {
            hasher.update(&chunk);
        }
        Ok(substratus_core::names::hex(&hasher.finalize()))
    }
}

/// The GCS FUSE volume of a bucket prefix: `only-dir` scopes the mount to the prefix.
pub fn gcsfuse_volume(prefix: &BucketUrl, access: Access) -> BucketVolume {
    let mut options = vec!["implicit-dirs".to_owned()];
    if !prefix.path.is_empty() {
        options.push(format!("only-dir={}", prefix.path));
    }
    BucketVolume {
        volume: Volume {
            csi: Some(CSIVolumeSource {
                driver: GCSFUSE_DRIVER.into(),
                read_only: Some(access == Access::ReadOnly),
                volume_attributes: Some(BTreeMap::from([
                    ("bucketName".to_owned(), prefix.bucket.clone()),
                    ("mountOptions".to_owned(), options.join(",")),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        },
        pod_annotations: BTreeMap::from([(GCSFUSE_ANNOTATION.to_owned(), "true".to_owned())]),
    }
}

#[async_trait]
impl Cloud for GcpCloud {
    fn name(&self) -> &'static str {
        "gcp"
    }

    fn config(&self) -> &CloudConfig {
        &self.config
    }

    fn bucket_volume(
        &self,
        folder: &PrefixFolder,
        access: Access,
    ) -> Result<BucketVolume, CloudError> {
        Ok(gcsfuse_volume(&folder.url, access))
    }

    /// The build reads the archive from a read-only gcsfuse mount of the prefix's `uploads/`,
    /// so the operator's image checks and unpacks it before kaniko runs (kaniko never reads
    /// the archive from `gs://` itself).
    fn upload_context(&self, prefix: &ArtifactPrefix) -> Result<UploadContext, CloudError> {
        Ok(static_pv::mounted_upload_context(
            gcsfuse_volume(&prefix.uploads().url, Access::ReadOnly),
            Vec::new(),
        ))
    }

    fn gpu_placement(
        &self,
        gpu_type: Option<GpuType>,
        _count: i64,
    ) -> Result<GpuPlacement, CloudError> {
        self.gpus.placement(gpu_type)
    }

    fn service_account_annotations(&self, _role: Role) -> BTreeMap<String, String> {
        BTreeMap::from([(GSA_ANNOTATION.to_owned(), self.principal.clone())])
    }

    async fn bind_identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<String>, CloudError> {
        let member = iam::member(&self.settings.project, namespace, service_account);
        let resource = format!(
            "{}/v1/projects/{}/serviceAccounts/{}",
            self.settings.iam_endpoint.trim_end_matches('/'),
            rest::segment(&self.settings.project),
            rest::segment(&self.principal)
        );
        // A concurrent writer changes the etag and our set fails with 409: read again.
        for _ in 0..5 {
            let token = self.token().await?;
            let policy = rest::json_found(
                self.http
                    .post(format!("{resource}:getIamPolicy"))
                    .bearer_auth(&token)
                    .json(&json!({"options": {"requestedPolicyVersion": 3}})),
                "reading the IAM policy of the Google service account",
            )
            .await?;
            let Some(next) = iam::with_member(&policy, iam::WORKLOAD_IDENTITY_USER, &member) else {
                return Ok(Some(self.principal.clone()));
            };
            match rest::json(
                self.http
                    .post(format!("{resource}:setIamPolicy"))
                    .bearer_auth(&token)
                    .json(&json!({"policy": next})),
                "setting the IAM policy of the Google service account",
            )
            .await
            {
                Ok(_) => return Ok(Some(self.principal.clone())),
                Err(CloudError::Transient(m)) if m.contains("HTTP 409") => continue,
                Err(e) => return Err(e),
            }
        }
        Err(CloudError::Transient(format!(
            "the IAM policy of {} kept changing while binding {member}; will retry",
            self.principal
        )))
    }

    async fn stored_md5(&self, key: &str) -> Result<Option<String>, CloudError> {
        let Some(object) = rest::json(
            self.http
                .get(self.object_url(key))
                .bearer_auth(self.token().await?),
            &format!("reading the metadata of {key}"),
        )
        .await?
        else {
            return Ok(None);
        };
        match object["md5Hash"].as_str().and_then(md5_hex_of_base64) {
            Some(md5) => Ok(Some(md5)),
            None => self.md5_by_reading(key).await.map(Some),
        }
    }

    async fn signed_upload_url(
        &self,
        key: &str,
        md5_hex: &str,
        ttl: Duration,
    ) -> Result<SignedUrl, CloudError> {
        let endpoint = self
            .settings
            .signed_url_endpoint
            .clone()
            .unwrap_or_else(|| self.settings.storage_endpoint.clone());
        let url = google_cloud_storage::builder::storage::SignedUrlBuilder::for_object(
            format!("projects/_/buckets/{}", self.config.artifact_bucket.bucket),
            key,
        )
        .with_method(http::Method::PUT)
        .with_expiration(ttl)
        .with_header("content-md5", md5_base64(md5_hex)?)
        .with_endpoint(endpoint)
        .with_client_email(self.principal.clone())
        .sign_with(&self.signer)
        .await
        .map_err(|e| CloudError::Transient(format!("signing the upload URL: {e}")))?;
        Ok(SignedUrl {
            url,
            expires_at_unix: jiff::Timestamp::now().as_second() + ttl.as_secs() as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_mounts_through_gcs_fuse_scoped_to_its_directory() {
        let v = gcsfuse_volume(
            &BucketUrl::parse("gs://b/abc/artifacts").unwrap(),
            Access::ReadOnly,
        );
        let csi = v.volume.csi.unwrap();
        assert_eq!(csi.driver, GCSFUSE_DRIVER);
        assert_eq!(csi.read_only, Some(true));
        let attrs = csi.volume_attributes.unwrap();
        assert_eq!(attrs["bucketName"], "b");
        assert_eq!(
            attrs["mountOptions"],
            "implicit-dirs,only-dir=abc/artifacts"
        );
        assert_eq!(v.pod_annotations[GCSFUSE_ANNOTATION], "true");
        let rw = gcsfuse_volume(&BucketUrl::parse("gs://b/x").unwrap(), Access::ReadWrite);
        assert_eq!(rw.volume.csi.unwrap().read_only, Some(false));
    }

    #[test]
    fn an_upload_is_mounted_through_gcs_fuse_and_checked_before_the_builder() {
        let cloud = GcpCloud::new(
            CloudConfig {
                cluster_name: "gke-1".into(),
                artifact_bucket: BucketUrl::parse("gs://artifacts").unwrap(),
                registry: "us-central1-docker.pkg.dev/p/substratus".into(),
                principal: Some("workloads@p.iam.gserviceaccount.com".into()),
            },
            GcpSettings {
                project: "p".into(),
                storage_endpoint: "http://127.0.0.1:9".into(),
                signed_url_endpoint: None,
                iam_endpoint: "http://127.0.0.1:9".into(),
                iam_credentials_endpoint: "http://127.0.0.1:9".into(),
                metadata_endpoint: "http://127.0.0.1:9".into(),
            },
            GpuCatalog::gcp(),
        )
        .unwrap();
        let template = crate::static_pv::upload_check::checked_before_the_builder(&cloud);
        // The gcsfuse sidecar is injected only into pods that ask for it.
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[GCSFUSE_ANNOTATION], "true");
        let pod = template.spec.unwrap();
        let upload = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "upload")
            .unwrap();
        let attrs = upload.csi.unwrap().volume_attributes.unwrap();
        assert_eq!(attrs["bucketName"], "artifacts");
        let options = &attrs["mountOptions"];
        assert!(
            options.ends_with("/uploads") && options.contains("only-dir="),
            "only the object's uploads folder: {options}"
        );
    }
}
