//! The AWS backend (EKS): artifacts in S3 mounted by the Mountpoint for S3 CSI driver (a
//! read-only and a read-write static PersistentVolume of each namespace's folder, which pods
//! mount their objects' folders of by `subPath`: Mountpoint has no inline volumes), uploads through presigned `PutObject` URLs that bind
//! `Content-MD5`, workload identity through IRSA (the role's trust policy) or EKS Pod
//! Identity associations, images in ECR. The builder pushes to ECR with kaniko's built-in ECR
//! credential helper, which takes the IRSA / Pod Identity credentials the pod is given.
//!
//! Which crate serves what: `aws-sdk-s3` (HeadObject, GetObject, presigned PutObject),
//! `aws-sdk-iam` (GetRole, UpdateAssumeRolePolicy), `aws-sdk-eks` (DescribeCluster, Pod
//! Identity associations), `aws-config` (the credential chain: IRSA web identity, Pod
//! Identity, IMDSv2; and the IMDS client for auto-configuration). All without default
//! features, on the SDK's `default-https-client`.

pub mod auto;
pub mod trust;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use substratus_core::cloud::{
    Access, ArtifactPrefix, BucketUrl, BucketVolume, Cloud, CloudConfig, CloudError, GpuPlacement,
    PrefixFolder, SignedUrl, Tenancy, UploadContext, folder_prefix, in_bucket, mirrored_key,
};
use substratus_core::conditions::reasons;
use substratus_core::names::{Kind, Role};
use substratus_crds::GpuType;

use crate::checksum::{etag_md5, md5_base64};
use crate::gpu::GpuCatalog;
use crate::static_pv;

/// The Mountpoint for Amazon S3 CSI driver.
pub const MOUNTPOINT_DRIVER: &str = "s3.csi.aws.com";
/// Annotation giving a Kubernetes service account an IAM role (IRSA).
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// How pods get the role's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMode {
    /// IAM Roles for Service Accounts: the trust policy names each service account; needs
    /// the cluster's OIDC issuer (`https://oidc.eks.<region>.amazonaws.com/id/<id>`).
    Irsa { oidc_issuer: String },
    /// EKS Pod Identity: one association per namespace/service account; the role trusts
    /// `pods.eks.amazonaws.com`.
    PodIdentity,
}

/// Settings of the AWS backend.
#[derive(Clone, Debug)]
pub struct AwsSettings {
    pub region: String,
    pub account_id: String,
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    pub identity: IdentityMode,
    /// Endpoint overrides (S3-compatible servers, tests).
    pub s3_endpoint: Option<String>,
    pub iam_endpoint: Option<String>,
    pub eks_endpoint: Option<String>,
    pub ecr_endpoint: Option<String>,
    /// Path-style S3 URLs (`https://host/bucket/key`); needed by most S3-compatible servers.
    pub force_path_style: bool,
}

/// The AWS backend.
pub struct AwsCloud {
    config: CloudConfig,
    settings: AwsSettings,
    gpus: GpuCatalog,
    s3: aws_sdk_s3::Client,
    iam: aws_sdk_iam::Client,
    eks: aws_sdk_eks::Client,
    ecr: aws_sdk_ecr::Client,
    role_arn: String,
    /// ECR repositories made (or found) already: each is created once per process.
    repositories: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The ECR repository of an image reference `<registry host>/<repository>:<tag>`.
pub fn ecr_repository(image: &str) -> Option<&str> {
    let (_host, rest) = image.split_once('/')?;
    let rest = rest.split_once('@').map_or(rest, |(r, _)| r);
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    let repository = match rest[last..].rfind(':') {
        Some(colon) => &rest[..last + colon],
        None => rest,
    };
    (!repository.is_empty()).then_some(repository)
}

/// A CloudError from an SDK error: refusals are permanent, the rest worth retrying.
fn sdk_error<E, R>(what: &str, e: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let permanent = matches!(
        e.code(),
        Some(
            "AccessDenied"
                | "AccessDeniedException"
                | "NoSuchEntity"
                | "NoSuchBucket"
                | "LimitExceeded"
                | "MalformedPolicyDocument"
                | "ValidationError"
                | "InvalidParameterException"
                | "InvalidRequestException"
                | "ResourceNotFoundException"
        )
    );
    let detail = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => error_chain(&e),
    };
    let message = format!("{what}: {detail}");
    if permanent {
        CloudError::Permanent {
            reason: reasons::CLOUD_ERROR,
            message,
        }
    } else {
        CloudError::Transient(message)
    }
}

pub(crate) fn error_chain<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    // The SDK's Display says only "service error" / "dispatch failure": walk the sources.
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl AwsCloud {
    /// The settings this backend runs with (after auto-configuration).
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// A backend on `sdk` (credentials and region from aws-config's chain).
    pub fn new(
        config: CloudConfig,
        settings: AwsSettings,
        gpus: GpuCatalog,
        sdk: &aws_config::SdkConfig,
    ) -> Result<AwsCloud, String> {
        config.require_scheme("aws", "s3")?;
        let role_arn = config
            .principal
            .clone()
            .ok_or("PRINCIPAL: the aws backend needs the ARN of the IAM role workloads run as")?;
        if trust::role_name(&role_arn).is_none() {
            return Err(format!("PRINCIPAL: {role_arn:?} is not an IAM role ARN"));
        }
        if config.tenancy == Tenancy::Namespace && settings.identity != IdentityMode::PodIdentity {
            return Err(
                "TENANCY=namespace on aws needs AWS_IDENTITY_MODE=pod-identity: EKS Pod \
                 Identity tags each session with the pod's namespace (kubernetes-namespace), \
                 which the role's policy matches; IRSA sessions carry no such tag"
                    .into(),
            );
        }
        let mut s3 = aws_sdk_s3::config::Builder::from(sdk)
            .region(aws_sdk_s3::config::Region::new(settings.region.clone()))
            .force_path_style(settings.force_path_style)
            // Presigned URLs carry no SDK checksum the user's client would have to match.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            );
        if let Some(e) = &settings.s3_endpoint {
            s3 = s3.endpoint_url(e);
        }
        let mut iam = aws_sdk_iam::config::Builder::from(sdk);
        if let Some(e) = &settings.iam_endpoint {
            iam = iam.endpoint_url(e);
        }
        let mut eks = aws_sdk_eks::config::Builder::from(sdk)
            .region(aws_sdk_eks::config::Region::new(settings.region.clone()));
        if let Some(e) = &settings.eks_endpoint {
            eks = eks.endpoint_url(e);
        }
        let mut ecr = aws_sdk_ecr::config::Builder::from(sdk)
            .region(aws_sdk_ecr::config::Region::new(settings.region.clone()));
        if let Some(e) = &settings.ecr_endpoint {
            ecr = ecr.endpoint_url(e);
        }
        Ok(AwsCloud {
            config,
            settings,
            gpus,
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            iam: aws_sdk_iam::Client::from_conf(iam.build()),
            eks: aws_sdk_eks::Client::from_conf(eks.build()),
            ecr: aws_sdk_ecr::Client::from_conf(ecr.build()),
            role_arn,
            repositories: Default::default(),
        })
    }

    fn bucket(&self) -> &str {
        &self.config.artifact_bucket.bucket
    }

    /// The hex MD5 of an object by reading it: the route for multipart uploads, whose ETag
    /// is an MD5 of part MD5s, not of the object.
    async fn md5_by_reading(&self, key: &str) -> Result<String, CloudError> {
        let got = self
            .s3
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("reading {key}"), e))?;
        let mut body = got.body;
        let mut hasher = Md5::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| CloudError::Transient(format!("reading {key}: {e}")))?
        {
            hasher.update(&chunk);
        }
        Ok(substratus_core::names::hex(&hasher.finalize()))
    }

    async fn bind_irsa(
        &self,
        issuer: &str,
        namespace: &str,
        ksa: &str,
    ) -> Result<Option<String>, CloudError> {
        let name = trust::role_name(&self.role_arn).unwrap_or_default();
        let role = self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("reading IAM role {name}"), e))?;
        let encoded = role
            .role
            .as_ref()
            .and_then(|r| r.assume_role_policy_document.as_deref())
            .unwrap_or("{}");
        // IAM returns the document URL-encoded.
        let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
        let doc: Value = serde_json::from_str(&decoded).unwrap_or(json!({}));
        let provider =
            trust::provider_arn(&self.settings.partition, &self.settings.account_id, issuer);
        let Some(next) =
            trust::with_subject(&doc, &provider, issuer, &trust::subject(namespace, ksa))
        else {
            return Ok(Some(self.role_arn.clone()));
        };
        self.iam
            .update_assume_role_policy()
            .role_name(name)
            .policy_document(next.to_string())
            .send()
            .await
            .map_err(|e| {
                let mut e = sdk_error(&format!("updating the trust policy of IAM role {name}"), e);
                if let CloudError::Permanent { message, .. } = &mut e
                    && message.contains("LimitExceeded")
                {
                    message.push_str(
                        " (the trust policy is full: use EKS Pod Identity, AWS_IDENTITY_MODE=pod-identity)",
                    );
                }
                e
            })?;
        Ok(Some(self.role_arn.clone()))
    }

    async fn bind_pod_identity(
        &self,
        namespace: &str,
        ksa: &str,
    ) -> Result<Option<String>, CloudError> {
        let cluster = &self.config.cluster_name;
        let found = self
            .eks
            .list_pod_identity_associations()
            .cluster_name(cluster)
            .namespace(namespace)
            .service_account(ksa)
            .send()
            .await
            .map_err(|e| sdk_error("listing EKS Pod Identity associations", e))?;
        if let Some(existing) = found.associations().first() {
            // One association per service account: describe it to see its role.
            let id = existing.association_id().unwrap_or_default();
            let described = self
                .eks
                .describe_pod_identity_association()
                .cluster_name(cluster)
                .association_id(id)
                .send()
                .await
                .map_err(|e| sdk_error("reading an EKS Pod Identity association", e))?;
            let role = described
                .association()
                .and_then(|a| a.role_arn())
                .unwrap_or_default();
            if role == self.role_arn {
                return Ok(Some(self.role_arn.clone()));
            }
            return Err(CloudError::Permanent {
                reason: reasons::CLOUD_ERROR,
                message: format!(
                    "service account {namespace}/{ksa} already has an EKS Pod Identity association ({id}) with role {role}, not {}",
                    self.role_arn
                ),
            });
        }
        self.eks
            .create_pod_identity_association()
            .cluster_name(cluster)
            .namespace(namespace)
            .service_account(ksa)
            .role_arn(&self.role_arn)
            // Idempotent: a retried create with the same token makes no second association.
            .client_request_token(format!("substratus-{namespace}-{ksa}"))
            .send()
            .await
            .map_err(|e| sdk_error("creating an EKS Pod Identity association", e))?;
        Ok(Some(self.role_arn.clone()))
    }

    /// A static Mountpoint volume for `url` and its claim in `namespace`.
    /// The Mountpoint volume of `folder` (a namespace's folder), read-only or read-write.
    fn mountpoint_source(
        &self,
        namespace: &str,
        folder: &BucketUrl,
        access: Access,
    ) -> static_pv::CsiSource {
        let mut options = vec![
            format!("region {}", self.settings.region),
            "allow-other".into(),
        ];
        if !folder.path.is_empty() {
            options.push(format!("prefix {}/", folder.path));
        }
        match access {
            // Writers may replace files (checkpoints).
            Access::ReadWrite => {
                options.push("allow-overwrite".into());
                options.push("allow-delete".into());
            }
            Access::ReadOnly => options.push("read-only".into()),
        }
        static_pv::CsiSource {
            driver: MOUNTPOINT_DRIVER.into(),
            volume_handle: static_pv::namespace_volume_name(namespace, folder, access),
            volume_attributes: json!({"bucketName": folder.bucket}),
            secret_ref: None,
            mount_options: options,
        }
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn config(&self) -> &CloudConfig {
        &self.config
    }

    fn bucket_volume(
        &self,
        folder: &PrefixFolder,
        access: Access,
    ) -> Result<BucketVolume, CloudError> {
        static_pv::namespace_claim_volume(
            &self.config.namespace_folder(&folder.namespace),
            &folder.url,
            access,
        )
    }

    /// A read-only and a read-write Mountpoint volume of the namespace's folder, each bound
    /// to its claim once: pods mount their objects' folders of it by `subPath`, and start
    /// without waiting for a claim of their own to bind.
    fn namespace_objects(&self, namespace: &str) -> Vec<Value> {
        let folder = self.config.namespace_folder(namespace);
        static_pv::read_only_and_read_write(namespace, &folder, |access| {
            self.mountpoint_source(namespace, &folder, access)
        })
    }

    /// The build reads the archive from a read-only Mountpoint volume of the prefix's
    /// `uploads/`, so the operator's image checks and unpacks it before kaniko runs (kaniko
    /// never reads the archive from `s3://` itself).
    fn upload_context(&self, prefix: &ArtifactPrefix) -> Result<UploadContext, CloudError> {
        static_pv::namespace_upload_context(
            &self.config.namespace_folder(&prefix.namespace),
            prefix,
            Access::ReadOnly,
        )
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
        _namespace: &str,
        _role: Role,
    ) -> Result<BTreeMap<String, String>, CloudError> {
        Ok(match self.settings.identity {
            IdentityMode::Irsa { .. } => {
                BTreeMap::from([(ROLE_ARN_ANNOTATION.to_owned(), self.role_arn.clone())])
            }
            // Pod Identity needs no annotation: the association names the service account.
            IdentityMode::PodIdentity => BTreeMap::new(),
        })
    }

    /// With namespace tenancy, the role as a session tagged with the namespace: what the
    /// role's policy allows depends on that tag (`${aws:PrincipalTag/kubernetes-namespace}`).
    fn workload_principal(&self, namespace: &str) -> Option<String> {
        Some(match self.config.tenancy {
            Tenancy::Shared => self.role_arn.clone(),
            Tenancy::Namespace => format!("{} kubernetes-namespace={namespace}", self.role_arn),
        })
    }

    /// With namespace tenancy, under the namespace's own path of the registry
    /// (`<repository>/<namespace>/…`), which the role's policy allows only to sessions of
    /// that namespace.
    fn image_url(&self, kind: Kind, namespace: &str, name: &str, tag: &str) -> String {
        let c = &self.config;
        let registry = match c.tenancy {
            Tenancy::Shared => c.registry.clone(),
            Tenancy::Namespace => format!("{}/{namespace}", c.registry.trim_end_matches('/')),
        };
        c.image_in(&registry, kind, namespace, name, tag)
    }

    async fn bind_identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<String>, CloudError> {
        let bound = match &self.settings.identity {
            IdentityMode::Irsa { oidc_issuer } => {
                self.bind_irsa(oidc_issuer, namespace, service_account)
                    .await?
            }
            IdentityMode::PodIdentity => self.bind_pod_identity(namespace, service_account).await?,
        };
        Ok(bound.and(self.workload_principal(namespace)))
    }

    /// ECR takes pushes only into repositories that exist, and kaniko creates none: the
    /// image's repository is created here (tagged as ours, scanned on push) before the
    /// build Job; one that exists already is fine.
    async fn prepare_image(&self, image: &str) -> Result<(), CloudError> {
        let repository = ecr_repository(image).ok_or_else(|| CloudError::Permanent {
            reason: reasons::CLOUD_ERROR,
            message: format!("{image:?} names no ECR repository; check REGISTRY_URL"),
        })?;
        let made = |r: &str| {
            self.repositories
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(r)
        };
        if made(repository) {
            return Ok(());
        }
        let created = self
            .ecr
            .create_repository()
            .repository_name(repository)
            .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Mutable)
            .image_scanning_configuration(
                aws_sdk_ecr::types::ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .tags(
                aws_sdk_ecr::types::Tag::builder()
                    .key("app.kubernetes.io/managed-by")
                    .value("substratus")
                    .build()
                    .map_err(|e| CloudError::Transient(format!("ECR tag: {e}")))?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_already_exists_exception()) => {}
            Err(e) => {
                return Err(sdk_error(
                    &format!("creating the ECR repository {repository}"),
                    e,
                ));
            }
        }
        self.repositories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repository.to_owned());
        Ok(())
    }

    async fn copy_folder(&self, from: &BucketUrl, to: &BucketUrl) -> Result<usize, CloudError> {
        in_bucket(&self.config, from)?;
        in_bucket(&self.config, to)?;
        let mut copied = 0;
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(folder_prefix(from))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(&format!("listing {from}"), e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(target) = mirrored_key(from, to, key) else {
                    continue;
                };
                // One CopyObject copies at most 5 GiB; larger objects need a multipart copy.
                if object.size().unwrap_or(0) > 5 << 30 {
                    return Err(CloudError::Permanent {
                        reason: reasons::CLOUD_ERROR,
                        message: format!(
                            "{key} is larger than 5 GiB, more than one S3 copy request copies"
                        ),
                    });
                }
                self.s3
                    .copy_object()
                    .bucket(self.bucket())
                    .key(&target)
                    .copy_source(format!(
                        "{}/{}",
                        self.bucket(),
                        crate::rest::encode_path(key)
                    ))
                    .send()
                    .await
                    .map_err(|e| sdk_error(&format!("copying {key} to {target}"), e))?;
                copied += 1;
            }
        }
        Ok(copied)
    }

    async fn stored_md5(&self, key: &str) -> Result<Option<String>, CloudError> {
        match self
            .s3
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(head) => {
                // Under SSE-KMS (a bucket's default encryption, often) the ETag of a single
                // PUT is not the MD5 of the object: read it instead.
                let kms = head
                    .server_side_encryption()
                    .is_some_and(|s| s.as_str().starts_with("aws:kms"));
                match head.e_tag().and_then(etag_md5).filter(|_| !kms) {
                    Some(md5) => Ok(Some(md5)),
                    None => self.md5_by_reading(key).await.map(Some),
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(sdk_error(&format!("reading the metadata of {key}"), e)),
        }
    }

    async fn signed_upload_url(
        &self,
        key: &str,
        md5_hex: &str,
        ttl: Duration,
    ) -> Result<SignedUrl, CloudError> {
        let presigning = PresigningConfig::expires_in(ttl)
            .map_err(|e| CloudError::Transient(format!("upload URL lifetime: {e}")))?;
        let req = self
            .s3
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .content_md5(md5_base64(md5_hex)?)
            .presigned(presigning)
            .await
            .map_err(|e| sdk_error("signing the upload URL", e))?;
        Ok(SignedUrl {
            url: req.uri().to_owned(),
            expires_at_unix: jiff::Timestamp::now().as_second() + ttl.as_secs() as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(identity: IdentityMode) -> AwsCloud {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        AwsCloud::new(
            CloudConfig {
                cluster_name: "c".into(),
                artifact_bucket: BucketUrl::parse("s3://123-substratus-artifacts").unwrap(),
                registry: "123.dkr.ecr.us-west-2.amazonaws.com/substratus".into(),
                principal: Some("arn:aws:iam::123:role/substratus".into()),
                tenancy: Default::default(),
            },
            AwsSettings {
                region: "us-west-2".into(),
                account_id: "123".into(),
                partition: "aws".into(),
                identity,
                s3_endpoint: None,
                iam_endpoint: None,
                eks_endpoint: None,
                ecr_endpoint: None,
                force_path_style: false,
            },
            GpuCatalog::aws(),
            &sdk,
        )
        .unwrap()
    }

    #[test]
    fn the_repository_of_an_image_is_its_path_without_the_tag() {
        let image = "123.dkr.ecr.us-west-2.amazonaws.com/substratus/eks-1-model-ns__m:v1-abc";
        assert_eq!(ecr_repository(image), Some("substratus/eks-1-model-ns__m"));
        assert_eq!(
            ecr_repository("h.example:5000/a/b@sha256:00"),
            Some("a/b"),
            "a port is not a tag"
        );
        assert_eq!(ecr_repository("h/r"), Some("r"));
        assert_eq!(ecr_repository("no-repository"), None);
    }

    fn mount_options(pv: &Value) -> Vec<String> {
        pv["spec"]["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_namespace_gets_a_retained_read_only_and_a_read_write_mountpoint_volume() {
        let mut c = cloud(IdentityMode::PodIdentity);
        c.config.tenancy = Tenancy::Namespace;
        let objs = c.namespace_objects("ns");
        let kinds: Vec<_> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "PersistentVolume",
                "PersistentVolumeClaim",
                "PersistentVolume",
                "PersistentVolumeClaim"
            ]
        );
        let (ro, rw) = (&objs[0], &objs[2]);
        for pv in [ro, rw] {
            assert_eq!(pv["spec"]["csi"]["driver"], MOUNTPOINT_DRIVER);
            assert_eq!(
                pv["spec"]["csi"]["volumeAttributes"]["bucketName"],
                "123-substratus-artifacts"
            );
            assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
            let opts = mount_options(pv);
            // Only the namespace's own folder is in the volume.
            assert!(opts.contains(&"prefix namespaces/ns/".into()), "{opts:?}");
            assert!(opts.contains(&"region us-west-2".into()), "{opts:?}");
        }
        assert_ne!(ro["metadata"]["name"], rw["metadata"]["name"]);
        assert_ne!(
            ro["spec"]["csi"]["volumeHandle"], rw["spec"]["csi"]["volumeHandle"],
            "Kubernetes processes a volume handle once"
        );
        let ro_opts = mount_options(ro);
        assert!(ro_opts.contains(&"read-only".into()), "{ro_opts:?}");
        assert!(
            !ro_opts
                .iter()
                .any(|o| o.starts_with("allow-") && o != "allow-other"),
            "{ro_opts:?}"
        );
        assert_eq!(ro["spec"]["accessModes"][0], "ReadOnlyMany");
        assert_eq!(objs[1]["spec"]["accessModes"][0], "ReadOnlyMany");
        let rw_opts = mount_options(rw);
        assert!(!rw_opts.contains(&"read-only".into()), "{rw_opts:?}");
        assert!(rw_opts.contains(&"allow-overwrite".into()), "{rw_opts:?}");
        // Shared tenancy: the bucket's root holds every prefix.
        let shared = cloud(IdentityMode::PodIdentity).namespace_objects("ns");
        assert!(
            !mount_options(&shared[0])
                .iter()
                .any(|o| o.starts_with("prefix")),
            "{:?}",
            shared[0]
        );
    }

    #[test]
    fn a_pod_mounts_each_folder_by_sub_path_of_one_namespace_volume_per_access() {
        use substratus_core::plan::{Mount, Parent, Workload, pod_template};
        let mut c = cloud(IdentityMode::PodIdentity);
        c.config.tenancy = Tenancy::Namespace;
        let prefix = |name: &str, hash: &str| ArtifactPrefix {
            kind: Kind::Model,
            namespace: "ns".into(),
            name: name.into(),
            hash: hash.into(),
            url: BucketUrl::parse(&format!(
                "s3://123-substratus-artifacts/namespaces/ns/{hash}"
            ))
            .unwrap(),
        };
        assert!(
            c.prefix_objects(&prefix("m", "h1")).is_empty(),
            "no claim per object"
        );
        let mount = |subdir: &'static str, hash: &str, access| Mount {
            subdir: subdir.into(),
            folder: prefix("x", hash).artifacts(),
            access,
            generation: None,
        };
        let parent = Parent {
            kind: Kind::Model,
            name: "m".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            generation: Some(1),
        };
        let env = BTreeMap::new();
        let workload = Workload {
            parent: &parent,
            image: "i",
            command: &[],
            env: &env,
            extra_env: Vec::new(),
            resources: None,
            mounts: vec![
                mount("artifacts", "h1", Access::ReadWrite),
                mount("data", "h2", Access::ReadOnly),
                mount("model", "h3", Access::ReadOnly),
            ],
            port: None,
            restart_policy: "Never",
        };
        let pod = pod_template(&workload, &c).unwrap().spec.unwrap();
        let claims: Vec<(String, String, Option<bool>)> = pod
            .volumes
            .unwrap()
            .into_iter()
            .filter_map(|v| {
                let pvc = v.persistent_volume_claim?;
                Some((v.name, pvc.claim_name, pvc.read_only))
            })
            .collect();
        assert_eq!(
            claims,
            [
                (
                    "artifacts".into(),
                    "substratus-bucket-rw".into(),
                    Some(false)
                ),
                ("data".into(), "substratus-bucket-ro".into(), Some(true)),
            ],
            "one pod volume per claim"
        );
        let mounts: Vec<_> = pod.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .filter(|m| m.name != "params")
            .map(|m| (m.name, m.mount_path, m.sub_path, m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                (
                    "artifacts".into(),
                    "/content/artifacts".into(),
                    Some("h1/artifacts".into()),
                    Some(false)
                ),
                (
                    "data".into(),
                    "/content/data".into(),
                    Some("h2/artifacts".into()),
                    Some(true)
                ),
                (
                    "data".into(),
                    "/content/model".into(),
                    Some("h3/artifacts".into()),
                    Some(true)
                ),
            ]
        );
        // A folder outside the namespace's own is refused, not mounted.
        let mut foreign = prefix("y", "h4").artifacts();
        foreign.url =
            BucketUrl::parse("s3://123-substratus-artifacts/namespaces/other/h4/artifacts")
                .unwrap();
        let err = c.bucket_volume(&foreign, Access::ReadOnly).unwrap_err();
        assert!(err.to_string().contains("namespaces/ns"), "{err}");
    }

    #[test]
    fn irsa_annotates_service_accounts_and_pod_identity_does_not() {
        let irsa = cloud(IdentityMode::Irsa {
            oidc_issuer: "https://oidc.eks.us-west-2.amazonaws.com/id/X".into(),
        });
        assert_eq!(
            irsa.service_account_annotations("ns", Role::Modeller)
                .unwrap()[ROLE_ARN_ANNOTATION],
            "arn:aws:iam::123:role/substratus"
        );
        assert!(
            cloud(IdentityMode::PodIdentity)
                .service_account_annotations("ns", Role::Modeller)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_upload_is_mounted_through_mountpoint_and_checked_before_the_builder() {
        let c = cloud(IdentityMode::PodIdentity);
        let template = crate::static_pv::upload_check::checked_before_the_builder(&c);
        let pod = template.spec.unwrap();
        let upload = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "upload")
            .unwrap();
        let claim = upload.persistent_volume_claim.unwrap();
        assert_eq!(claim.claim_name, "substratus-bucket-ro");
        assert_eq!(claim.read_only, Some(true));
        // The unpacking step sees only the object's uploads folder, read-only.
        let unpack = &pod.init_containers.unwrap()[0];
        let mount = unpack
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "upload")
            .unwrap();
        assert!(
            mount.sub_path.as_deref().unwrap().ends_with("/uploads"),
            "{mount:?}"
        );
        assert_eq!(mount.read_only, Some(true));
        // Nothing of the build's own: the namespace's claims serve it.
        let build = crate::static_pv::upload_check::build_plan(&c, &Default::default());
        assert!(
            !build
                .children
                .iter()
                .chain(&build.create)
                .any(|c| c.to_value()["kind"] == "PersistentVolume"),
            "no volume per build"
        );
    }
}
