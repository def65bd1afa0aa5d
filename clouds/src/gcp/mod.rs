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
pub mod tenancy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{CSIVolumeSource, Volume};
use md5::{Digest, Md5};
use reqwest::Method;
use serde_json::{Value, json};
use substratus_core::cloud::{
    Access, ArtifactPrefix, BucketUrl, BucketVolume, Cloud, CloudConfig, CloudError, GpuPlacement,
    PrefixFolder, SignedUrl, Tenancy, UploadContext, folder_prefix, in_bucket, mirrored_key,
};
use substratus_core::names::{Kind, Role};
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
    /// Artifact Registry API, `https://artifactregistry.googleapis.com` (namespace tenancy:
    /// each namespace's repository).
    pub artifact_registry_endpoint: String,
    /// The project's number (`PROJECT_NUMBER`), which names the namespaces' principal sets
    /// with namespace tenancy.
    pub project_number: Option<String>,
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
            artifact_registry_endpoint: "https://artifactregistry.googleapis.com".into(),
            project_number: None,
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
    /// The Google service account workloads (and the signer) act as; with namespace tenancy
    /// only the signer.
    principal: String,
    /// With namespace tenancy: the registry's repository, next to which each namespace gets
    /// its own, and the project's number.
    namespaces: Option<(tenancy::Repository, String)>,
}

/// Where an IAM policy is read and written: each API spells it its own way.
struct PolicyOf {
    what: String,
    read: (Method, String, Option<Value>),
    write: (Method, String),
    /// The set call takes `{"policy": …}` rather than the policy itself.
    wrapped: bool,
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
        let namespaces = match config.tenancy {
            Tenancy::Shared => None,
            Tenancy::Namespace => {
                let number = settings.project_number.clone().filter(|n| !n.is_empty());
                let number = number.ok_or(
                    "PROJECT_NUMBER: TENANCY=namespace on gcp needs the project's number, which \
                     names each namespace's principal set; set it, or run on GKE where the \
                     metadata server tells it",
                )?;
                Some((tenancy::Repository::parse(&config.registry)?, number))
            }
        };
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
            namespaces,
        })
    }

    /// Adds `member` to `role` (under `condition`) in the policy of `of`: read, change,
    /// write with the read etag; a concurrent writer (409 or 412) makes us read again. A
    /// member bound already makes no write.
    async fn ensure_binding(
        &self,
        of: &PolicyOf,
        role: &str,
        member: &str,
        condition: Option<&Value>,
    ) -> Result<(), CloudError> {
        for _ in 0..5 {
            let token = self.token().await?;
            let (method, url, body) = &of.read;
            let mut read = self.http.request(method.clone(), url).bearer_auth(&token);
            if let Some(body) = body {
                read = read.json(body);
            }
            let policy =
                rest::json_found(read, &format!("reading the IAM policy of {}", of.what)).await?;
            let Some(next) = iam::with_binding(&policy, role, member, condition) else {
                return Ok(());
            };
            let body = if of.wrapped {
                json!({ "policy": next })
            } else {
                next
            };
            let (method, url) = &of.write;
            match rest::json(
                self.http
                    .request(method.clone(), url)
                    .bearer_auth(&token)
                    .json(&body),
                &format!("setting the IAM policy of {}", of.what),
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(CloudError::Transient(m))
                    if m.contains("HTTP 409") || m.contains("HTTP 412") =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(CloudError::Transient(format!(
            "the IAM policy of {} kept changing while binding {member}; will retry",
            of.what
        )))
    }

    /// The IAM policy of the Google service account workloads act as (shared tenancy).
    fn service_account_policy(&self) -> PolicyOf {
        let resource = format!(
            "{}/v1/projects/{}/serviceAccounts/{}",
            self.settings.iam_endpoint.trim_end_matches('/'),
            rest::segment(&self.settings.project),
            rest::segment(&self.principal)
        );
        PolicyOf {
            what: format!("the Google service account {}", self.principal),
            read: (
                Method::POST,
                format!("{resource}:getIamPolicy"),
                Some(json!({"options": {"requestedPolicyVersion": 3}})),
            ),
            write: (Method::POST, format!("{resource}:setIamPolicy")),
            wrapped: true,
        }
    }

    /// The bucket's IAM policy (Cloud Storage JSON API).
    fn bucket_policy(&self) -> PolicyOf {
        let bucket = &self.config.artifact_bucket.bucket;
        let url = format!(
            "{}/storage/v1/b/{}/iam",
            self.settings.storage_endpoint.trim_end_matches('/'),
            rest::segment(bucket)
        );
        PolicyOf {
            what: format!("the bucket {bucket}"),
            read: (
                Method::GET,
                format!("{url}?optionsRequestedPolicyVersion=3"),
                None,
            ),
            write: (Method::PUT, url),
            wrapped: false,
        }
    }

    /// An Artifact Registry repository's IAM policy.
    fn repository_policy(&self, repository: &tenancy::Repository) -> PolicyOf {
        let resource = format!(
            "{}/v1/{}",
            self.settings
                .artifact_registry_endpoint
                .trim_end_matches('/'),
            repository.resource()
        );
        PolicyOf {
            what: format!("the repository {}", repository.url()),
            read: (
                Method::GET,
                format!("{resource}:getIamPolicy?options.requestedPolicyVersion=3"),
                None,
            ),
            write: (Method::POST, format!("{resource}:setIamPolicy")),
            wrapped: true,
        }
    }

    /// Creates the Docker repository unless it exists (409 from a concurrent create counts as
    /// made). Creation is a long-running operation: until it is done, the IAM calls on the
    /// repository answer 404, which the caller's retry covers.
    async fn ensure_repository(&self, repository: &tenancy::Repository) -> Result<(), CloudError> {
        let api = self
            .settings
            .artifact_registry_endpoint
            .trim_end_matches('/');
        let token = self.token().await?;
        let found = rest::json(
            self.http
                .get(format!("{api}/v1/{}", repository.resource()))
                .bearer_auth(&token),
            &format!("reading the repository {}", repository.url()),
        )
        .await?;
        if found.is_some() {
            return Ok(());
        }
        let parent = format!(
            "projects/{}/locations/{}",
            repository.project, repository.location
        );
        let created = rest::json(
            self.http
                .post(format!("{api}/v1/{parent}/repositories"))
                .query(&[("repositoryId", repository.id.as_str())])
                .bearer_auth(&token)
                .json(&json!({
                    "format": "DOCKER",
                    "description": "Images Substratus builds for one namespace",
                    "labels": {"app-kubernetes-io-managed-by": "substratus"},
                })),
            &format!("creating the repository {}", repository.url()),
        )
        .await;
        match created {
            Ok(_) => Ok(()),
            Err(CloudError::Transient(m)) if m.contains("HTTP 409") => Ok(()),
            Err(e) => Err(e),
        }
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

    /// Copies object `from` to `to` in the bucket with `objects.rewrite`, which may take
    /// several calls for a large object (each returns a token to go on with).
    async fn rewrite(&self, from: &str, to: &str) -> Result<(), CloudError> {
        let url = format!(
            "{}/rewriteTo/b/{}/o/{}",
            self.object_url(from),
            rest::segment(&self.config.artifact_bucket.bucket),
            rest::segment(to)
        );
        let what = format!("copying {from} to {to}");
        let mut token: Option<String> = None;
        // A rewrite copies at least 1 GiB per call (more within one location and class):
        // bounded by the object's size, and by this cap in any case.
        for _ in 0..10_000 {
            let mut req = self.http.post(&url).bearer_auth(self.token().await?);
            if let Some(t) = &token {
                req = req.query(&[("rewriteToken", t)]);
            }
            let answer = rest::json_found(req.json(&json!({})), &what).await?;
            if answer["done"].as_bool() == Some(true) {
                return Ok(());
            }
            match answer["rewriteToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => {
                    return Err(CloudError::Transient(format!(
                        "{what}: the answer is neither done nor has a rewriteToken"
                    )));
                }
            }
        }
        Err(CloudError::Transient(format!(
            "{what}: not done after 10,000 calls"
        )))
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
        sub_path: None,
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

    /// Shared tenancy: the account acts as the Google service account. Namespace tenancy:
    /// it acts as itself (no annotation).
    fn service_account_annotations(
        &self,
        _namespace: &str,
        _role: Role,
    ) -> Result<BTreeMap<String, String>, CloudError> {
        Ok(match self.namespaces {
            None => BTreeMap::from([(GSA_ANNOTATION.to_owned(), self.principal.clone())]),
            Some(_) => BTreeMap::new(),
        })
    }

    /// With namespace tenancy, in the namespace's own repository.
    fn image_url(&self, kind: Kind, namespace: &str, name: &str, tag: &str) -> String {
        let registry = match &self.namespaces {
            None => self.config.registry.clone(),
            Some((registry, _)) => registry.of_namespace(namespace).url(),
        };
        self.config.image_in(&registry, kind, namespace, name, tag)
    }

    fn workload_principal(&self, namespace: &str) -> Option<String> {
        match &self.namespaces {
            None => Some(self.principal.clone()),
            Some((_, number)) => Some(tenancy::namespace_member(
                number,
                &self.settings.project,
                namespace,
            )),
        }
    }

    /// Shared tenancy: `roles/iam.workloadIdentityUser` on the Google service account for the
    /// Kubernetes service account. Namespace tenancy: the namespace's principal set gets its
    /// folder of the bucket and its own repository (created here); the account itself needs
    /// no binding, as Workload Identity Federation names it directly.
    async fn bind_identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<String>, CloudError> {
        let Some((registry, _)) = &self.namespaces else {
            let member = iam::member(&self.settings.project, namespace, service_account);
            self.ensure_binding(
                &self.service_account_policy(),
                iam::WORKLOAD_IDENTITY_USER,
                &member,
                None,
            )
            .await?;
            return Ok(Some(self.principal.clone()));
        };
        let member = self.workload_principal(namespace).unwrap_or_default();
        let folder = self.config.namespace_folder(namespace);
        let condition = tenancy::folder_condition(namespace, &folder);
        self.ensure_binding(
            &self.bucket_policy(),
            tenancy::OBJECT_USER,
            &member,
            Some(&condition),
        )
        .await?;
        let repository = registry.of_namespace(namespace);
        self.ensure_repository(&repository).await?;
        let bound = self
            .ensure_binding(
                &self.repository_policy(&repository),
                tenancy::REGISTRY_WRITER,
                &member,
                None,
            )
            .await;
        match bound {
            // Created a moment ago and not yet there.
            Err(CloudError::Permanent { message, .. }) if message.ends_with("not found") => {
                Err(CloudError::Transient(format!(
                    "{message}: the repository is still being created; will retry"
                )))
            }
            other => other.map(|()| Some(member)),
        }
    }

    async fn copy_folder(&self, from: &BucketUrl, to: &BucketUrl) -> Result<usize, CloudError> {
        in_bucket(&self.config, from)?;
        in_bucket(&self.config, to)?;
        let list = format!(
            "{}/storage/v1/b/{}/o",
            self.settings.storage_endpoint.trim_end_matches('/'),
            rest::segment(&self.config.artifact_bucket.bucket),
        );
        let prefix = folder_prefix(from);
        let mut copied = 0;
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![
                ("prefix", prefix.clone()),
                ("fields", "items(name),nextPageToken".into()),
            ];
            if let Some(t) = page_token.take() {
                query.push(("pageToken", t));
            }
            let page = rest::json_found(
                self.http
                    .get(&list)
                    .query(&query)
                    .bearer_auth(self.token().await?),
                &format!("listing {from}"),
            )
            .await?;
            for item in page["items"].as_array().into_iter().flatten() {
                let Some(key) = item["name"].as_str() else {
                    continue;
                };
                let Some(target) = mirrored_key(from, to, key) else {
                    continue;
                };
                self.rewrite(key, &target).await?;
                copied += 1;
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => page_token = Some(t.to_owned()),
                _ => return Ok(copied),
            }
        }
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
                tenancy: Default::default(),
            },
            GcpSettings {
                project: "p".into(),
                storage_endpoint: "http://127.0.0.1:9".into(),
                signed_url_endpoint: None,
                iam_endpoint: "http://127.0.0.1:9".into(),
                iam_credentials_endpoint: "http://127.0.0.1:9".into(),
                metadata_endpoint: "http://127.0.0.1:9".into(),
                artifact_registry_endpoint: "http://127.0.0.1:9".into(),
                project_number: None,
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
