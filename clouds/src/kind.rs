//! The kind backend: a local cluster whose bucket is an S3-compatible server (MinIO in the
//! kind install), mounted into pods through an S3 CSI driver: with a static PersistentVolume
//! and claim per prefix or per namespace (any driver, e.g. k8s-csi-s3), or with inline
//! volumes that name the object (`substratus-csi-s3`, which derives the prefix from the
//! object and the pod's namespace). No cloud identity; images go to an in-cluster registry.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use http::{HeaderName, HeaderValue, Method};
use k8s_openapi::api::core::v1::{CSIVolumeSource, Volume};
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};
use substratus_core::cloud::{
    Access, ArtifactPrefix, BucketUrl, BucketVolume, Cloud, CloudConfig, CloudError,
    DefaultResources, GpuPlacement, PrefixFolder, SignedUrl, UploadContext, folder_prefix,
    in_bucket, mirrored_key,
};
use substratus_core::names;
use substratus_crds::GpuType;

use crate::gpu::GpuCatalog;
use crate::static_pv;

/// Settings of the kind backend.
#[derive(Clone, Debug)]
pub struct KindSettings {
    /// S3 endpoint the operator uses, e.g. `http://minio.substratus.svc:9000`.
    pub endpoint: String,
    /// S3 endpoint put into signed URLs: one the user's machine reaches (e.g.
    /// `http://localhost:30080`). Defaults to `endpoint`.
    pub public_endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// CSI driver that mounts S3 prefixes.
    pub csi_driver: String,
    /// Secret (namespace/name) with the CSI driver's S3 credentials.
    pub csi_secret: (String, String),
    /// Registry the builder pulls Docker Hub images from instead of Docker Hub (a pull-through
    /// cache, or a registry holding copies: an offline cluster's).
    pub registry_mirror: Option<String>,
    /// How pods mount prefixes.
    pub volumes: KindVolumes,
}

/// How pods mount a prefix on the kind backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KindVolumes {
    /// A static PersistentVolume (`Retain`) and its claim per prefix, for any S3 CSI driver:
    /// two more objects per prefix, and pods start once the volume controller has bound the
    /// claim.
    #[default]
    Claims,
    /// An inline CSI volume naming the object, for `substratus-csi-s3`: the driver derives
    /// the prefix from the object's kind and name and the pod's own namespace, with its own
    /// credentials, so a pod can mount only prefixes of its namespace. Nothing to create or
    /// bind.
    Inline,
    /// A read-only and a read-write static PersistentVolume (`Retain`) and claim per
    /// namespace, of the namespace's folder, for any S3 CSI driver that mounts a folder:
    /// pods mount their objects' folders by `subPath`, and only a namespace's first pods
    /// wait for its claims to bind.
    Namespace,
}

impl KindVolumes {
    /// `claims`, `inline` or `namespace`, as `S3_CSI_VOLUMES` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            KindVolumes::Claims => "claims",
            KindVolumes::Inline => "inline",
            KindVolumes::Namespace => "namespace",
        }
    }
}

impl std::str::FromStr for KindVolumes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "claims" => Ok(KindVolumes::Claims),
            "inline" => Ok(KindVolumes::Inline),
            "namespace" => Ok(KindVolumes::Namespace),
            other => Err(format!(
                "{other:?} is not a way to mount prefixes: claims (a claim per prefix, any S3 \
                 CSI driver), namespace (a claim per namespace mounted by subPath, any S3 CSI \
                 driver) or inline (substratus-csi-s3)"
            )),
        }
    }
}

/// The attributes of an inline volume, read by `substratus-csi-s3` (`csi/s3/inline.go`).
pub mod inline_attributes {
    pub const BUCKET: &str = "bucket";
    /// The configured bucket URL's path, under which prefixes live (may be empty).
    pub const ROOT: &str = "root";
    pub const CLUSTER: &str = "cluster";
    pub const KIND: &str = "kind";
    pub const NAME: &str = "name";
    /// `artifacts` or `uploads`.
    pub const FOLDER: &str = "folder";
    pub const OPTIONS: &str = "options";
    /// `shared` or `namespace` (`TENANCY`): whether the prefix sits in the pod's
    /// namespace's folder (`namespaces/<namespace>/`).
    pub const TENANCY: &str = "tenancy";
}

/// The kind backend.
pub struct KindCloud {
    config: CloudConfig,
    settings: KindSettings,
    store: Arc<AmazonS3>,
    signer: Arc<AmazonS3>,
    gpus: GpuCatalog,
}

fn s3(settings: &KindSettings, bucket: &str, endpoint: &str) -> Result<AmazonS3, String> {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region(&settings.region)
        .with_bucket_name(bucket)
        .with_access_key_id(&settings.access_key_id)
        .with_secret_access_key(&settings.secret_access_key)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .map_err(|e| format!("S3 client for {endpoint}: {e}"))
}

fn transient(what: &str) -> impl Fn(object_store::Error) -> CloudError + '_ {
    move |e| CloudError::Transient(format!("{what}: {e}"))
}

impl KindCloud {
    pub fn new(
        config: CloudConfig,
        settings: KindSettings,
        gpus: GpuCatalog,
    ) -> Result<KindCloud, String> {
        config.require_scheme("kind", "s3")?;
        let store = s3(
            &settings,
            &config.artifact_bucket.bucket,
            &settings.endpoint,
        )?;
        let public = settings
            .public_endpoint
            .clone()
            .unwrap_or_else(|| settings.endpoint.clone());
        let signer = s3(&settings, &config.artifact_bucket.bucket, &public)?;
        Ok(KindCloud {
            config,
            settings,
            store: Arc::new(store),
            signer: Arc::new(signer),
            gpus,
        })
    }

    /// Object key (inside the bucket) of a bucket URL of this backend.
    fn key_of(&self, url: &BucketUrl) -> String {
        url.path.clone()
    }

    /// Name of the claim for a prefix: stable, and short enough for any namespace.
    pub fn claim_name(url: &BucketUrl) -> String {
        static_pv::claim_name(url)
    }

    /// The inline volume of a folder: the object's identity, not its location, which the
    /// driver derives with the pod's namespace.
    fn inline_volume(&self, folder: &PrefixFolder, access: Access) -> Volume {
        use inline_attributes as a;
        let config = &self.config;
        let attributes = [
            (a::BUCKET, config.artifact_bucket.bucket.as_str()),
            (a::ROOT, config.artifact_bucket.path.as_str()),
            (a::CLUSTER, config.cluster_name.as_str()),
            (a::KIND, folder.kind.name()),
            (a::NAME, folder.name.as_str()),
            (a::FOLDER, folder.folder),
            (a::OPTIONS, "--dir-mode 0777 --file-mode 0666"),
            (a::TENANCY, config.tenancy.as_str()),
        ];
        Volume {
            csi: Some(CSIVolumeSource {
                driver: self.settings.csi_driver.clone(),
                read_only: Some(access == Access::ReadOnly),
                volume_attributes: Some(
                    attributes
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A static PersistentVolume (Retain) for `url` and its claim in `namespace`.
    fn claim_objects(&self, namespace: &str, url: &BucketUrl) -> Vec<Value> {
        static_pv::objects(namespace, url, self.csi_source(url))
    }

    /// The read-write CSI volume of `url` with the driver's credentials.
    fn csi_source(&self, url: &BucketUrl) -> static_pv::CsiSource {
        let (secret_ns, secret_name) = &self.settings.csi_secret;
        static_pv::CsiSource {
            driver: self.settings.csi_driver.clone(),
            volume_handle: format!("{}/{}", url.bucket, self.key_of(url)),
            volume_attributes: json!({"mounter": "geesefs", "options": "--memory-limit 1000 --dir-mode 0777 --file-mode 0666"}),
            secret_ref: Some(json!({"name": secret_name, "namespace": secret_ns})),
            mount_options: vec![],
        }
    }

    /// Computes the hex MD5 of an object by reading it (for multipart uploads, whose ETag is
    /// not an MD5).
    async fn md5_by_reading(&self, path: &Path) -> Result<String, CloudError> {
        let got = self
            .store
            .get(path)
            .await
            .map_err(transient("reading the object"))?;
        let mut stream = got.into_stream();
        let mut hasher = Md5::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(chunk.map_err(transient("reading the object"))?);
        }
        Ok(names::hex(&hasher.finalize()))
    }
}

pub use crate::checksum::{etag_md5, md5_base64};

#[async_trait]
impl Cloud for KindCloud {
    fn name(&self) -> &'static str {
        "kind"
    }

    fn config(&self) -> &CloudConfig {
        &self.config
    }

    fn default_resources(&self) -> DefaultResources {
        // A laptop: request nothing unless asked.
        DefaultResources {
            cpu: 0,
            memory_gib: 0,
            disk_gib: 0,
        }
    }

    fn bucket_volume(
        &self,
        folder: &PrefixFolder,
        access: Access,
    ) -> Result<BucketVolume, CloudError> {
        Ok(match self.settings.volumes {
            KindVolumes::Claims => static_pv::claim_volume(&folder.url, access),
            // One read-write claim: a read-only folder is a read-only bind mount of it
            // (`volumeMounts[].readOnly`), as the drivers here take the location from the
            // volume handle, which a pod must not hold twice.
            KindVolumes::Namespace => {
                return static_pv::namespace_claim_volume(
                    &self.config.namespace_folder(&folder.namespace),
                    &folder.url,
                    Access::ReadWrite,
                );
            }
            KindVolumes::Inline => BucketVolume {
                sub_path: None,
                volume: self.inline_volume(folder, access),
                pod_annotations: Default::default(),
            },
        })
    }

    fn prefix_objects(&self, prefix: &ArtifactPrefix) -> Vec<Value> {
        match self.settings.volumes {
            KindVolumes::Claims => self.claim_objects(&prefix.namespace, &prefix.artifacts().url),
            KindVolumes::Inline | KindVolumes::Namespace => Vec::new(),
        }
    }

    fn namespace_objects(&self, namespace: &str) -> Vec<Value> {
        if self.settings.volumes != KindVolumes::Namespace {
            return Vec::new();
        }
        let folder = self.config.namespace_folder(namespace);
        let source = self.csi_source(&folder);
        static_pv::namespace_objects(namespace, &folder, Access::ReadWrite, source)
    }

    /// The builder reads the archive from a read-only mount of the prefix's `uploads/`.
    fn upload_context(&self, prefix: &ArtifactPrefix) -> Result<UploadContext, CloudError> {
        Ok(match self.settings.volumes {
            KindVolumes::Claims => {
                static_pv::claimed_upload_context(prefix, |ns, url| self.claim_objects(ns, url))
            }
            KindVolumes::Namespace => static_pv::namespace_upload_context(
                &self.config.namespace_folder(&prefix.namespace),
                prefix,
                Access::ReadWrite,
            )?,
            KindVolumes::Inline => static_pv::mounted_upload_context(
                BucketVolume {
                    sub_path: None,
                    volume: self.inline_volume(&prefix.uploads(), Access::ReadOnly),
                    pod_annotations: Default::default(),
                },
                Vec::new(),
            ),
        })
    }

    /// The in-cluster registry (and a mirror) speak plain HTTP.
    fn builder_args(&self) -> Vec<String> {
        let mut args = vec!["--insecure".into(), "--insecure-pull".into()];
        if let Some(mirror) = &self.settings.registry_mirror {
            args.push(format!("--registry-mirror={mirror}"));
        }
        args
    }

    fn builder_resources(&self) -> DefaultResources {
        self.default_resources()
    }

    fn gpu_placement(
        &self,
        gpu_type: Option<GpuType>,
        _count: i64,
    ) -> Result<GpuPlacement, CloudError> {
        self.gpus.placement(gpu_type)
    }

    async fn bind_identity(
        &self,
        _namespace: &str,
        _service_account: &str,
    ) -> Result<Option<String>, CloudError> {
        Ok(None)
    }

    async fn copy_folder(&self, from: &BucketUrl, to: &BucketUrl) -> Result<usize, CloudError> {
        in_bucket(&self.config, from)?;
        in_bucket(&self.config, to)?;
        let prefix = Path::from(folder_prefix(from));
        let keys: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map(|m| m.map(|m| m.location))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(transient("listing the folder to copy"))?;
        let mut copied = 0;
        for key in keys {
            let Some(target) = mirrored_key(from, to, key.as_ref()) else {
                continue;
            };
            self.store
                .copy(&key, &Path::from(target))
                .await
                .map_err(transient("copying an object"))?;
            copied += 1;
        }
        Ok(copied)
    }

    async fn stored_md5(&self, key: &str) -> Result<Option<String>, CloudError> {
        let path = Path::from(key);
        match self.store.head(&path).await {
            Ok(meta) => match meta.e_tag.as_deref().and_then(etag_md5) {
                Some(md5) => Ok(Some(md5)),
                None => self.md5_by_reading(&path).await.map(Some),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(CloudError::Transient(format!("reading {key}: {e}"))),
        }
    }

    async fn signed_upload_url(
        &self,
        key: &str,
        md5_hex: &str,
        ttl: Duration,
    ) -> Result<SignedUrl, CloudError> {
        let content_md5 = md5_base64(md5_hex)?;
        let header = HeaderValue::from_str(&content_md5)
            .map_err(|e| CloudError::Transient(e.to_string()))?;
        let opts = SignedUrlOptions::new()
            .with_signed_header(HeaderName::from_static("content-md5"), header);
        let url = self
            .signer
            .signed_url_opts(Method::PUT, &Path::from(key), ttl, &opts)
            .await
            .map_err(transient("signing the upload URL"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(SignedUrl {
            url: url.to_string(),
            expires_at_unix: now + ttl.as_secs() as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud() -> KindCloud {
        KindCloud::new(
            CloudConfig {
                cluster_name: "kind".into(),
                artifact_bucket: BucketUrl::parse("s3://artifacts").unwrap(),
                registry: "registry.local:5000".into(),
                principal: None,
                tenancy: Default::default(),
            },
            KindSettings {
                endpoint: "http://127.0.0.1:9".into(),
                public_endpoint: None,
                region: "us-east-1".into(),
                access_key_id: "k".into(),
                secret_access_key: "s".into(),
                csi_driver: "ru.yandex.s3.csi".into(),
                csi_secret: ("kube-system".into(), "csi-s3-secret".into()),
                registry_mirror: None,
                volumes: KindVolumes::Claims,
            },
            GpuCatalog::kind(),
        )
        .unwrap()
    }

    #[test]
    fn a_mounted_upload_is_checked_and_unpacked_before_the_builder_reads_a_directory() {
        use crate::static_pv::upload_check;
        for volumes in [
            KindVolumes::Claims,
            KindVolumes::Namespace,
            KindVolumes::Inline,
        ] {
            let mut c = cloud();
            c.settings.volumes = volumes;
            upload_check::checked_before_the_builder(&c);
        }
        // Without the image, the archive goes to the builder as it is.
        let plain = upload_check::build_pod(&cloud(), &Default::default())
            .spec
            .unwrap();
        assert!(plain.init_containers.is_none());
        assert!(
            plain.containers[0]
                .args
                .as_ref()
                .unwrap()
                .contains(&"--context=tar:///upload/latest.tar.gz".to_owned())
        );
    }

    #[test]
    fn the_builder_pulls_docker_hub_images_from_the_mirror_when_one_is_set() {
        let plain = cloud();
        assert_eq!(plain.builder_args(), vec!["--insecure", "--insecure-pull"]);
        let mut mirrored = cloud();
        mirrored.settings.registry_mirror = Some("registry.local:5000".into());
        assert_eq!(
            mirrored.builder_args(),
            vec![
                "--insecure",
                "--insecure-pull",
                "--registry-mirror=registry.local:5000"
            ]
        );
    }

    #[test]
    fn a_prefix_gets_a_retained_volume_and_a_claim_pods_mount() {
        let c = cloud();
        let prefix = ArtifactPrefix {
            kind: substratus_core::names::Kind::Model,
            namespace: "ns".into(),
            name: "m".into(),
            hash: "h".into(),
            url: BucketUrl::parse("s3://artifacts/h").unwrap(),
        };
        let objs = c.prefix_objects(&prefix);
        let pv = &objs[0];
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["csi"]["volumeHandle"], "artifacts/h/artifacts");
        let claim = objs[1]["metadata"]["name"].as_str().unwrap();
        assert_eq!(pv["spec"]["claimRef"]["name"], claim);
        let v = c
            .bucket_volume(&prefix.artifacts(), Access::ReadOnly)
            .unwrap()
            .volume;
        let pvc = v.persistent_volume_claim.unwrap();
        assert_eq!(pvc.claim_name, claim);
        assert_eq!(pvc.read_only, Some(true));
        assert!(claim.len() <= 63);
    }

    #[test]
    fn a_namespace_gets_one_retained_volume_its_pods_mount_by_sub_path() {
        let mut c = cloud();
        c.settings.volumes = KindVolumes::Namespace;
        c.config.tenancy = substratus_core::cloud::Tenancy::Namespace;
        let prefix = ArtifactPrefix {
            kind: substratus_core::names::Kind::Model,
            namespace: "ns".into(),
            name: "m".into(),
            hash: "h".into(),
            url: BucketUrl::parse("s3://artifacts/namespaces/ns/h").unwrap(),
        };
        assert!(c.prefix_objects(&prefix).is_empty(), "no claim per object");
        let objs = c.namespace_objects("ns");
        assert_eq!(objs.len(), 2, "{objs:?}");
        let (pv, pvc) = (&objs[0], &objs[1]);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["csi"]["volumeHandle"], "artifacts/namespaces/ns");
        assert_eq!(pvc["metadata"]["namespace"], "ns");
        for access in [Access::ReadOnly, Access::ReadWrite] {
            let v = c.bucket_volume(&prefix.artifacts(), access).unwrap();
            let claim = v.volume.persistent_volume_claim.unwrap();
            assert_eq!(claim.claim_name, pvc["metadata"]["name"].as_str().unwrap());
            assert_eq!(v.sub_path.as_deref(), Some("h/artifacts"));
        }
        let upload = c.upload_context(&prefix).unwrap();
        assert!(upload.objects.is_empty());
        assert_eq!(upload.sub_path.as_deref(), Some("h/uploads"));
        // Other modes make nothing per namespace.
        assert!(cloud().namespace_objects("ns").is_empty());
        assert_eq!(
            "namespace".parse::<KindVolumes>(),
            Ok(KindVolumes::Namespace)
        );
    }

    #[test]
    fn inline_volumes_name_the_object_and_need_no_claim() {
        let mut c = cloud();
        c.settings.volumes = KindVolumes::Inline;
        c.settings.csi_driver = "s3.csi.substratus.ai".into();
        c.config.artifact_bucket = BucketUrl::parse("s3://artifacts/team").unwrap();
        let prefix = ArtifactPrefix {
            kind: substratus_core::names::Kind::Dataset,
            namespace: "ns".into(),
            name: "d".into(),
            hash: "h".into(),
            url: BucketUrl::parse("s3://artifacts/team/h").unwrap(),
        };
        assert!(c.prefix_objects(&prefix).is_empty());
        let csi = c
            .bucket_volume(&prefix.artifacts(), Access::ReadWrite)
            .unwrap()
            .volume
            .csi
            .unwrap();
        assert_eq!(csi.driver, "s3.csi.substratus.ai");
        assert_eq!(csi.read_only, Some(false));
        let attrs = csi.volume_attributes.unwrap();
        let attr = |k: &str| attrs.get(k).map(String::as_str);
        use inline_attributes as a;
        assert_eq!(attr(a::BUCKET), Some("artifacts"));
        assert_eq!(attr(a::ROOT), Some("team"));
        assert_eq!(attr(a::CLUSTER), Some("kind"));
        assert_eq!(attr(a::KIND), Some("Dataset"));
        assert_eq!(attr(a::NAME), Some("d"));
        assert_eq!(attr(a::FOLDER), Some("artifacts"));
        assert_eq!(attr(a::TENANCY), Some("shared"));
        c.config.tenancy = substratus_core::cloud::Tenancy::Namespace;
        let tenancy = c
            .bucket_volume(&prefix.artifacts(), Access::ReadWrite)
            .unwrap()
            .volume
            .csi
            .unwrap()
            .volume_attributes
            .unwrap();
        assert_eq!(
            tenancy.get(a::TENANCY).map(String::as_str),
            Some("namespace")
        );
        // No location: the driver derives it from the object and the pod's namespace.
        assert!(!attrs.values().any(|v| v.contains("h/")), "{attrs:?}");
        let upload = c.upload_context(&prefix).unwrap();
        assert!(upload.objects.is_empty());
        let (volume, at) = upload.mount.unwrap();
        let csi = volume.csi.unwrap();
        assert_eq!(at, "/upload");
        assert_eq!(csi.read_only, Some(true));
        assert_eq!(
            csi.volume_attributes
                .unwrap()
                .get(a::FOLDER)
                .map(String::as_str),
            Some("uploads")
        );
        assert_eq!("inline".parse::<KindVolumes>(), Ok(KindVolumes::Inline));
        let err = "pvc".parse::<KindVolumes>().unwrap_err();
        assert!(
            err.contains("claims") && err.contains("inline") && err.contains("namespace"),
            "{err}"
        );
    }

    #[test]
    fn a_non_s3_bucket_is_refused_at_start() {
        let mut cfg = cloud().config().clone();
        cfg.artifact_bucket = BucketUrl::parse("gs://b").unwrap();
        let settings = cloud().settings.clone();
        let err = KindCloud::new(cfg, settings, GpuCatalog::kind())
            .err()
            .unwrap();
        assert!(err.contains("ARTIFACT_BUCKET_URL"), "{err}");
    }

    #[test]
    fn images_are_named_by_cluster_kind_namespace_and_name_without_collisions() {
        let url = |ns: &str, name: &str| {
            cloud().image_url(substratus_core::names::Kind::Model, ns, name, "v1")
        };
        assert_eq!(url("ns", "m"), "registry.local:5000/kind-model-ns__m:v1");
        assert_ne!(url("a-model", "x"), url("a", "model-x"));
    }
}
