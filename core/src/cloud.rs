//! The `Cloud` trait: everything provider-specific the reconcilers need, behind one
//! interface used as `Arc<dyn Cloud>`. No SDK type crosses it. Every call is idempotent.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Affinity, Toleration, Volume};
use substratus_crds::GpuType;

use crate::names::{Kind, Role};

/// A bucket location: `scheme://bucket/path`, e.g. `s3://artifacts` or `gs://b/sub/dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketUrl {
    pub scheme: String,
    pub bucket: String,
    /// Path inside the bucket, without leading or trailing `/`; may be empty.
    pub path: String,
}

impl BucketUrl {
    /// Parses `scheme://bucket[/path]`.
    pub fn parse(url: &str) -> Result<BucketUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} is not a bucket URL of the form scheme://bucket/path")
        })?;
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("{url:?} has no valid scheme"));
        }
        let rest = rest.trim_matches('/');
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket"));
        }
        Ok(BucketUrl {
            scheme: scheme.to_owned(),
            bucket: bucket.to_owned(),
            path: path.trim_matches('/').to_owned(),
        })
    }

    /// The object key of `rel` inside this location.
    pub fn key(&self, rel: &str) -> String {
        let rel = rel.trim_start_matches('/');
        if self.path.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.path)
        }
    }

    /// This location extended by `rel`.
    pub fn join(&self, rel: &str) -> BucketUrl {
        BucketUrl {
            path: self.key(rel).trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}://{}", self.scheme, self.bucket)
        } else {
            write!(f, "{}://{}/{}", self.scheme, self.bucket, self.path)
        }
    }
}

/// Configuration every backend shares (the original's `system` ConfigMap keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudConfig {
    /// `CLUSTER_NAME`: part of storage prefixes and image names.
    pub cluster_name: String,
    /// `ARTIFACT_BUCKET_URL`: where artifacts and uploads live.
    pub artifact_bucket: BucketUrl,
    /// `REGISTRY_URL`: where built images are pushed.
    pub registry: String,
    /// `PRINCIPAL`: the cloud identity workloads run as (none on kind).
    pub principal: Option<String>,
    /// `TENANCY`: whether namespaces share one cloud identity or each has its own.
    pub tenancy: Tenancy,
}

/// Who may reach what of the bucket and the registry through the cloud's own API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tenancy {
    /// One trust domain: every namespace's workloads act as one cloud principal, which may
    /// read and write the whole bucket and push to the whole registry.
    #[default]
    Shared,
    /// Each namespace's workloads act as an identity of that namespace, allowed only its own
    /// folder of the bucket (`namespaces/<namespace>/`, where its objects' prefixes live) and
    /// its own registry repository.
    Namespace,
}

impl Tenancy {
    pub fn as_str(self) -> &'static str {
        match self {
            Tenancy::Shared => "shared",
            Tenancy::Namespace => "namespace",
        }
    }
}

impl std::fmt::Display for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tenancy {
    type Err = String;
    fn from_str(s: &str) -> Result<Tenancy, String> {
        match s {
            "shared" => Ok(Tenancy::Shared),
            "namespace" => Ok(Tenancy::Namespace),
            other => Err(format!(
                "TENANCY: {other:?} is not a tenancy; expected namespace (each namespace has \
                 its own cloud identity, bucket folder and registry repository) or shared (one \
                 identity for all namespaces)"
            )),
        }
    }
}

impl CloudConfig {
    /// The image of an object in `registry` (the configured one, or a backend's repository
    /// for the namespace): `<registry>/<cluster>-<kind>-<ns>__<name>:<tag>`.
    pub fn image_in(
        &self,
        registry: &str,
        kind: Kind,
        namespace: &str,
        name: &str,
        tag: &str,
    ) -> String {
        format!(
            "{}/{}-{}-{namespace}__{name}:{tag}",
            registry.trim_end_matches('/'),
            self.cluster_name,
            kind.lower()
        )
    }

    /// The bucket folder every prefix of `namespace` lives under: the namespace's own
    /// folder with [`Tenancy::Namespace`], the bucket's root (shared by every namespace)
    /// with [`Tenancy::Shared`], which keeps the original's layout.
    pub fn namespace_folder(&self, namespace: &str) -> BucketUrl {
        match self.tenancy {
            Tenancy::Shared => self.artifact_bucket.clone(),
            Tenancy::Namespace => self
                .artifact_bucket
                .join(&format!("{NAMESPACES_FOLDER}/{namespace}")),
        }
    }

    /// Refuses an artifact bucket of another provider, naming the setting.
    pub fn require_scheme(&self, backend: &str, scheme: &str) -> Result<(), String> {
        if self.artifact_bucket.scheme == scheme {
            Ok(())
        } else {
            Err(format!(
                "ARTIFACT_BUCKET_URL: the {backend} backend needs a {scheme}://<bucket>/<path> URL, got {}",
                self.artifact_bucket
            ))
        }
    }
}

/// The bucket folder holding one folder per namespace with [`Tenancy::Namespace`].
pub const NAMESPACES_FOLDER: &str = "namespaces";

/// How a pod mounts a bucket prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// The storage prefix of one object (Model, Dataset or Notebook).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactPrefix {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The hex MD5 of the object's identity ([`crate::names::storage_prefix`]).
    pub hash: String,
    /// `<bucket URL>/<hash>`, or `<bucket URL>/namespaces/<namespace>/<hash>` with
    /// [`Tenancy::Namespace`] ([`CloudConfig::namespace_folder`]).
    pub url: BucketUrl,
}

impl ArtifactPrefix {
    /// The `artifacts/` folder under the prefix.
    pub fn artifacts(&self) -> PrefixFolder {
        self.folder("artifacts")
    }
    /// The `uploads/` folder under the prefix.
    pub fn uploads(&self) -> PrefixFolder {
        self.folder("uploads")
    }
    fn folder(&self, folder: &'static str) -> PrefixFolder {
        PrefixFolder {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            folder,
            url: self.url.join(folder),
        }
    }
    /// Key of the uploaded build context.
    pub fn upload_key(&self) -> String {
        self.url.key("uploads/latest.tar.gz")
    }
}

/// One folder (`artifacts` or `uploads`) of an object's prefix: what a pod mounts. It names
/// the object as well as the location, so that a backend can mount it by identity: an inline
/// volume whose driver derives the location from the object and the pod's own namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixFolder {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// `artifacts` or `uploads`.
    pub folder: &'static str,
    /// `<bucket URL>/<hash>/<folder>`.
    pub url: BucketUrl,
}

/// What a pod needs to mount a prefix.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BucketVolume {
    /// The pod volume (its name is set by the caller).
    pub volume: Volume,
    /// The folder's path inside the volume when the volume holds more than the folder (a
    /// namespace's volume): the container mounts only that path (`subPath`), and pods
    /// mounting several folders of one volume share one pod volume.
    pub sub_path: Option<String>,
    /// Annotations the pod needs (e.g. GKE's `gke-gcsfuse/volumes`).
    pub pod_annotations: BTreeMap<String, String>,
}

/// Where GPU pods go: node selector, affinity and tolerations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuPlacement {
    pub node_selector: BTreeMap<String, String>,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
}

/// A short-lived URL to PUT an object to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedUrl {
    pub url: String,
    /// Seconds since the Unix epoch after which the URL no longer works.
    pub expires_at_unix: i64,
}

/// How a build Job reads an uploaded build context.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UploadContext {
    /// The builder's `--context`, e.g. `gs://bucket/<hash>/uploads/latest.tar.gz` or
    /// `tar:///upload/latest.tar.gz` when the archive is mounted.
    pub context: String,
    /// A volume holding the archive and the directory it is mounted at, when the builder
    /// reads it from a mount rather than from the bucket's API.
    pub mount: Option<(Volume, String)>,
    /// The archive's folder inside the mounted volume, when the volume holds more than it.
    pub sub_path: Option<String>,
    /// Objects the mount needs (e.g. a PersistentVolume and its claim), applied and owned
    /// like [`Cloud::prefix_objects`].
    pub objects: Vec<serde_json::Value>,
    /// Annotations the build pod needs for the mount (e.g. GKE's gcsfuse sidecar).
    pub pod_annotations: BTreeMap<String, String>,
}

/// Errors of a backend, classified for the reconcilers.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CloudError {
    /// Worth retrying with backoff (network, throttling, a conflict).
    #[error("{0}")]
    Transient(String),
    /// The request cannot succeed until the object or the configuration changes;
    /// `reason` becomes the condition's reason.
    #[error("{message}")]
    Permanent {
        reason: &'static str,
        message: String,
    },
}

impl CloudError {
    pub fn gpu_unavailable(cloud: &str, gpu: GpuType) -> CloudError {
        CloudError::Permanent {
            reason: crate::conditions::reasons::GPU_TYPE_UNAVAILABLE,
            message: format!(
                "GPU type {gpu} is not offered on cloud {cloud}; choose another spec.resources.gpu.type or omit it to use any GPU"
            ),
        }
    }
}

/// Requests of a container when the object has no `resources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultResources {
    pub cpu: i64,
    pub memory_gib: i64,
    pub disk_gib: i64,
}

/// A provider: kind, GCP, AWS or Azure.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// `kind`, `gcp`, `aws` or `azure`.
    fn name(&self) -> &'static str;

    /// Shared configuration.
    fn config(&self) -> &CloudConfig;

    /// Requests used when an object sets no `resources`.
    fn default_resources(&self) -> DefaultResources {
        DefaultResources {
            cpu: 2,
            memory_gib: 4,
            disk_gib: 100,
        }
    }

    /// The pod volume for a folder of an object's prefix, read-only or read-write.
    fn bucket_volume(
        &self,
        folder: &PrefixFolder,
        access: Access,
    ) -> Result<BucketVolume, CloudError>;

    /// Objects the owner of a prefix keeps so that pods can mount it (e.g. a static
    /// PersistentVolume and its claim); empty for inline CSI volumes. Each is applied by the
    /// reconciler of the owning object and, when namespaced, owned by it.
    fn prefix_objects(&self, _prefix: &ArtifactPrefix) -> Vec<serde_json::Value> {
        Vec::new()
    }

    /// Objects a namespace keeps so that its pods can mount its prefixes (e.g. a static
    /// volume and claim of the namespace's folder, which pods mount with a per-object
    /// `subPath`): applied before any workload of the namespace is planned, owned by nothing
    /// (they serve every object of the namespace; a cluster-scoped volume whose claim is gone
    /// is the janitor's). Default: none.
    fn namespace_objects(&self, _namespace: &str) -> Vec<serde_json::Value> {
        Vec::new()
    }

    /// Node selector, affinity and tolerations for `count` GPUs of `gpu_type` (any type when
    /// `None`). A type the provider does not offer is a permanent error.
    fn gpu_placement(
        &self,
        gpu_type: Option<GpuType>,
        count: i64,
    ) -> Result<GpuPlacement, CloudError>;

    /// Annotations of a role's ServiceAccount in `namespace` for workload identity. Called
    /// after [`Cloud::prepare_namespace`] of that namespace succeeded.
    fn service_account_annotations(
        &self,
        _namespace: &str,
        _role: Role,
    ) -> Result<BTreeMap<String, String>, CloudError> {
        Ok(BTreeMap::new())
    }

    /// Makes what every workload of `namespace` needs from the cloud before any of its
    /// objects is planned: with [`Tenancy::Namespace`] on AKS, the namespace's own managed
    /// identity and its role assignments, whose client id the namespace's volumes and
    /// accounts name. Idempotent and cheap once done (the backend remembers it). Default:
    /// nothing to do.
    async fn prepare_namespace(&self, _namespace: &str) -> Result<(), CloudError> {
        Ok(())
    }

    /// Labels every workload pod needs for workload identity.
    fn pod_identity_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// The cloud principal the role accounts of `namespace` act as once bound; recorded on
    /// each account, so that a binding is made once. Default: `PRINCIPAL`, shared by every
    /// namespace; a backend with [`Tenancy::Namespace`] names the namespace's own.
    fn workload_principal(&self, _namespace: &str) -> Option<String> {
        self.config().principal.clone()
    }

    /// Lets `namespace/service_account` act as the cloud principal. Idempotent: a binding
    /// that exists already makes no write. Returns the principal bound (None: nothing to do).
    async fn bind_identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<String>, CloudError>;

    /// The image a build of an object is pushed to:
    /// `<registry>/<cluster>-<kind>-<ns>__<name>:<tag>`. A namespace never holds `_`, so
    /// `__` ends it unambiguously: Model `x` of namespace `a-model` and Model `model-x` of
    /// namespace `a` get different images.
    fn image_url(&self, kind: Kind, namespace: &str, name: &str, tag: &str) -> String {
        let c = self.config();
        c.image_in(&c.registry, kind, namespace, name, tag)
    }

    /// Makes `image` (an [`Cloud::image_url`]) pushable before a build Job runs, e.g. creates
    /// its repository where the registry accepts pushes only into repositories that exist
    /// (ECR). Idempotent. Default: nothing to do.
    async fn prepare_image(&self, _image: &str) -> Result<(), CloudError> {
        Ok(())
    }

    /// How the builder reads the uploaded context of `prefix` (its `uploads/latest.tar.gz`).
    /// By default straight from the bucket's API, which the builder supports for `gs://`,
    /// `s3://` and Azure Blob URLs, authenticated by the builder's workload identity.
    fn upload_context(&self, prefix: &ArtifactPrefix) -> Result<UploadContext, CloudError> {
        let key = prefix.upload_key();
        let b = &prefix.url;
        Ok(UploadContext {
            context: format!("{}://{}/{key}", b.scheme, b.bucket),
            ..Default::default()
        })
    }

    /// Extra arguments of the builder for this cloud's registry (e.g. plain HTTP on kind).
    fn builder_args(&self) -> Vec<String> {
        Vec::new()
    }

    /// Requests of the builder container (none on a laptop).
    fn builder_resources(&self) -> DefaultResources {
        DefaultResources {
            cpu: 2,
            memory_gib: 12,
            disk_gib: 100,
        }
    }

    /// The hex MD5 of a stored object, `None` when it does not exist.
    async fn stored_md5(&self, key: &str) -> Result<Option<String>, CloudError>;

    /// A PUT URL for `key`, valid for `ttl`, bound to `md5_hex` where the provider can.
    async fn signed_upload_url(
        &self,
        key: &str,
        md5_hex: &str,
        ttl: Duration,
    ) -> Result<SignedUrl, CloudError>;

    /// Copies every object under `from` to the same relative key under `to`, both in the
    /// configured bucket, overwriting what is there. The copy is made by the storage
    /// service: no byte passes through the operator. Returns how many objects it copied.
    async fn copy_folder(&self, from: &BucketUrl, to: &BucketUrl) -> Result<usize, CloudError>;
}

/// The key of an object under `to` that mirrors `key` under `from` (`None`: `key` is not
/// under `from`). A folder's keys are those starting with its path and `/`: `a/b` holds
/// `a/b/c`, not `a/bc`.
pub fn mirrored_key(from: &BucketUrl, to: &BucketUrl, key: &str) -> Option<String> {
    let rel = if from.path.is_empty() {
        key
    } else {
        key.strip_prefix(from.path.as_str())?.strip_prefix('/')?
    };
    (!rel.is_empty()).then(|| to.key(rel))
}

/// The listing prefix of a folder: its path and `/` (empty for the bucket's root).
pub fn folder_prefix(folder: &BucketUrl) -> String {
    if folder.path.is_empty() {
        String::new()
    } else {
        format!("{}/", folder.path)
    }
}

/// Refuses a location outside the configured bucket: copies never leave it.
pub fn in_bucket(config: &CloudConfig, url: &BucketUrl) -> Result<(), CloudError> {
    let b = &config.artifact_bucket;
    if url.scheme == b.scheme && url.bucket == b.bucket {
        Ok(())
    } else {
        Err(CloudError::Permanent {
            reason: crate::conditions::reasons::CLOUD_ERROR,
            message: format!("{url} is not in the configured bucket {b}"),
        })
    }
}

/// How long one call to a cloud may take before it counts as a transient failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `call` under `timeout`: a cloud that does not answer is a transient failure naming
/// `what` (retried with backoff), never a reconcile that holds its object forever.
pub async fn within<T>(
    what: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, CloudError>>,
) -> Result<T, CloudError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(CloudError::Transient(format!(
                "{what}: the cloud did not answer within {timeout:?}"
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_cloud_call_that_hangs_fails_after_its_timeout() {
        let hung = within("reading x", Duration::from_secs(30), async {
            futures::future::pending::<Result<u8, CloudError>>().await
        });
        let started = tokio::time::Instant::now();
        match hung.await {
            Err(CloudError::Transient(m)) => assert!(
                m.starts_with("reading x: the cloud did not answer within 30s"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // An answer in time passes through, error or not.
        assert_eq!(
            within("y", Duration::from_secs(1), async { Ok(7) })
                .await
                .unwrap(),
            7
        );
        let permanent = within("z", Duration::from_secs(1), async {
            Err::<u8, _>(CloudError::Permanent {
                reason: "R",
                message: "m".into(),
            })
        });
        assert!(matches!(
            permanent.await,
            Err(CloudError::Permanent { reason: "R", .. })
        ));
    }

    #[test]
    fn bucket_urls_parse_and_print() {
        let u = BucketUrl::parse("gs://my-bucket").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.bucket.as_str(), u.path.as_str()),
            ("gs", "my-bucket", "")
        );
        assert_eq!(u.join("abc").to_string(), "gs://my-bucket/abc");
        let u = BucketUrl::parse("s3://b/some/dir/").unwrap();
        assert_eq!(u.path, "some/dir");
        assert_eq!(u.key("x/y"), "some/dir/x/y");
        assert_eq!(u.to_string(), "s3://b/some/dir");
        for bad in ["nobucket", "s3://", "://b", "s 3://b"] {
            assert!(BucketUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_folders_keys_mirror_under_another_and_nothing_else_does() {
        let from = BucketUrl::parse("s3://b/x/artifacts").unwrap();
        let to = BucketUrl::parse("s3://b/y/artifacts/sql/3").unwrap();
        assert_eq!(
            mirrored_key(&from, &to, "x/artifacts/model.safetensors").as_deref(),
            Some("y/artifacts/sql/3/model.safetensors")
        );
        assert_eq!(
            mirrored_key(&from, &to, "x/artifacts/a/b.json").as_deref(),
            Some("y/artifacts/sql/3/a/b.json")
        );
        assert_eq!(mirrored_key(&from, &to, "x/artifactsX/a"), None);
        assert_eq!(mirrored_key(&from, &to, "x/artifacts/"), None);
        assert_eq!(mirrored_key(&from, &to, "z/artifacts/a"), None);
        assert_eq!(folder_prefix(&from), "x/artifacts/");
        assert_eq!(folder_prefix(&BucketUrl::parse("s3://b").unwrap()), "");
    }

    #[test]
    fn prefix_keys() {
        let p = ArtifactPrefix {
            kind: Kind::Model,
            namespace: "ns".into(),
            name: "m".into(),
            hash: "h".into(),
            url: BucketUrl::parse("s3://b/h").unwrap(),
        };
        assert_eq!(p.artifacts().url.to_string(), "s3://b/h/artifacts");
        assert_eq!(p.uploads().url.to_string(), "s3://b/h/uploads");
        assert_eq!(p.artifacts().name, "m");
        assert_eq!(p.upload_key(), "h/uploads/latest.tar.gz");
    }
}
