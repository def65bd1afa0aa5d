//! Static PersistentVolume + PersistentVolumeClaim pairs for CSI drivers that mount a bucket
//! prefix only through a PersistentVolume (k8s-csi-s3 on kind, Mountpoint for S3 on EKS).
//!
//! The volume is cluster-scoped, so it cannot be owned by the namespaced object whose prefix it
//! mounts; it carries [`CLAIM_LABEL`] and [`CLAIM_NAMESPACE_LABEL`] so that the janitor can
//! delete the volumes whose claim is gone. Its reclaim policy is `Retain`: deleting either object never
//! deletes a byte in the bucket.

use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use substratus_core::cloud::{
    Access, ArtifactPrefix, BucketUrl, BucketVolume, CloudError, UploadContext,
};
use substratus_core::conditions::reasons;
use substratus_core::names::{self, MANAGED_BY, MANAGED_BY_LABEL};

/// Labels the janitor (`substratus_core::reconcile::janitor`) finds the volumes by.
pub use substratus_core::reconcile::janitor::{CLAIM_LABEL, CLAIM_NAMESPACE_LABEL};

/// Name of the claim for a prefix: stable, and short enough for any namespace.
pub fn claim_name(url: &BucketUrl) -> String {
    format!(
        "substratus-{}",
        &names::hex(&Md5::digest(url.to_string().as_bytes()))[..20]
    )
}

/// Name of the cluster-scoped volume of a prefix in a namespace.
pub fn volume_name(namespace: &str, url: &BucketUrl) -> String {
    let id = names::hex(&Md5::digest(format!("{namespace}/{url}").as_bytes()));
    format!("substratus-{}", &id[..24])
}

/// The pod volume of a prefix mounted through its claim.
pub fn claim_volume(prefix: &BucketUrl, access: Access) -> BucketVolume {
    BucketVolume {
        sub_path: None,
        volume: Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(prefix),
                read_only: Some(access == Access::ReadOnly),
            }),
            ..Default::default()
        },
        pod_annotations: Default::default(),
    }
}

/// The build context read from a read-only mount of the prefix's `uploads/` at `/upload`,
/// through `volume`; `objects` are what the mount needs (a volume and its claim, or none).
pub fn mounted_upload_context(volume: BucketVolume, objects: Vec<Value>) -> UploadContext {
    UploadContext {
        context: "tar:///upload/latest.tar.gz".into(),
        mount: Some((volume.volume, "/upload".into())),
        sub_path: volume.sub_path,
        objects,
        pod_annotations: volume.pod_annotations,
    }
}

/// [`mounted_upload_context`] through a static volume and claim; `claim_objects` makes the
/// volume and claim of a location in a namespace.
pub fn claimed_upload_context(
    prefix: &ArtifactPrefix,
    claim_objects: impl FnOnce(&str, &BucketUrl) -> Vec<Value>,
) -> UploadContext {
    let uploads = prefix.uploads().url;
    mounted_upload_context(
        claim_volume(&uploads, Access::ReadOnly),
        claim_objects(&prefix.namespace, &uploads),
    )
}

/// The CSI part of a static volume.
pub struct CsiSource {
    pub driver: String,
    pub volume_handle: String,
    pub volume_attributes: Value,
    /// `controllerPublishSecretRef` etc., when the driver reads credentials from a Secret.
    pub secret_ref: Option<Value>,
    pub mount_options: Vec<String>,
}

/// A `Retain` volume bound to exactly one claim in `namespace`, and that claim.
pub fn objects(namespace: &str, url: &BucketUrl, source: CsiSource) -> Vec<Value> {
    pair(
        namespace,
        &claim_name(url),
        &volume_name(namespace, url),
        Access::ReadWrite,
        source,
    )
}

/// The claim of a namespace's folder for mounts of `access`: one read-only and one
/// read-write per namespace, whichever of its objects' folders a pod mounts.
pub fn namespace_claim_name(access: Access) -> &'static str {
    match access {
        Access::ReadOnly => "substratus-bucket-ro",
        Access::ReadWrite => "substratus-bucket-rw",
    }
}

/// The cluster-scoped volume of a namespace's folder for mounts of `access`.
pub fn namespace_volume_name(namespace: &str, folder: &BucketUrl, access: Access) -> String {
    let role = namespace_claim_name(access);
    let id = names::hex(&Md5::digest(
        format!("{namespace}/{folder}#{role}").as_bytes(),
    ));
    format!("substratus-{}", &id[..24])
}

/// The volume and claim of `namespace`'s folder (`folder`, which holds every prefix of the
/// namespace) for mounts of `access`; `source` mounts `folder` (read-only for
/// [`Access::ReadOnly`]). Bound once per namespace: pods of later objects start without
/// waiting for a binding.
pub fn namespace_objects(
    namespace: &str,
    folder: &BucketUrl,
    access: Access,
    source: CsiSource,
) -> Vec<Value> {
    pair(
        namespace,
        namespace_claim_name(access),
        &namespace_volume_name(namespace, folder, access),
        access,
        source,
    )
}

/// A namespace's read-only and read-write volume and claim of `folder` (see
/// [`namespace_objects`]), `source` giving each one's CSI part.
pub fn read_only_and_read_write(
    namespace: &str,
    folder: &BucketUrl,
    source: impl Fn(Access) -> CsiSource,
) -> Vec<Value> {
    [Access::ReadOnly, Access::ReadWrite]
        .into_iter()
        .flat_map(|access| namespace_objects(namespace, folder, access, source(access)))
        .collect()
}

/// The pod volume of `url` through the claim for `access` of its namespace's folder
/// `folder`: the container mounts only `url`'s path inside it (`subPath`); a read-only claim
/// is mounted read-only. (Whether the container's mount is read-only is the mount's own:
/// a read-only folder may be a read-only mount of the read-write claim.)
pub fn namespace_claim_volume(
    folder: &BucketUrl,
    url: &BucketUrl,
    access: Access,
) -> Result<BucketVolume, CloudError> {
    let sub_path = sub_path(folder, url).ok_or_else(|| CloudError::Permanent {
        reason: reasons::INVALID_SPEC,
        message: format!("{url} is not inside the namespace's folder {folder}"),
    })?;
    Ok(BucketVolume {
        volume: Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: namespace_claim_name(access).into(),
                read_only: Some(access == Access::ReadOnly),
            }),
            ..Default::default()
        },
        sub_path: Some(sub_path),
        pod_annotations: Default::default(),
    })
}

/// `url`'s path relative to `folder`, when `url` is strictly inside it.
fn sub_path(folder: &BucketUrl, url: &BucketUrl) -> Option<String> {
    if folder.scheme != url.scheme || folder.bucket != url.bucket {
        return None;
    }
    let rest = if folder.path.is_empty() {
        url.path.as_str()
    } else {
        url.path.strip_prefix(&folder.path)?.strip_prefix('/')?
    };
    let clean = !rest.is_empty()
        && rest
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    clean.then(|| rest.to_owned())
}

/// The build context read from a read-only mount of the prefix's `uploads/` through the
/// namespace's claim of `folder` for `claim` access.
pub fn namespace_upload_context(
    folder: &BucketUrl,
    prefix: &ArtifactPrefix,
    claim: Access,
) -> Result<UploadContext, CloudError> {
    Ok(mounted_upload_context(
        namespace_claim_volume(folder, &prefix.uploads().url, claim)?,
        Vec::new(),
    ))
}

/// A `Retain` volume named `volume` bound to exactly the claim `claim` in `namespace`, and
/// that claim.
fn pair(
    namespace: &str,
    claim: &str,
    volume: &str,
    access: Access,
    source: CsiSource,
) -> Vec<Value> {
    let modes = match access {
        Access::ReadOnly => ["ReadOnlyMany"],
        Access::ReadWrite => ["ReadWriteMany"],
    };
    let mut csi = json!({
        "driver": source.driver,
        "volumeHandle": source.volume_handle,
        "volumeAttributes": source.volume_attributes,
    });
    if let Some(secret) = source.secret_ref {
        for key in [
            "controllerPublishSecretRef",
            "nodePublishSecretRef",
            "nodeStageSecretRef",
        ] {
            csi[key] = secret.clone();
        }
    }
    if access == Access::ReadOnly {
        csi["readOnly"] = json!(true);
    }
    let mut spec = json!({
        "capacity": {"storage": "1Ti"},
        "accessModes": modes,
        // Retain: deleting a claim must never delete artifacts.
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "claimRef": {"namespace": namespace, "name": claim},
        "csi": csi,
    });
    if !source.mount_options.is_empty() {
        spec["mountOptions"] = json!(source.mount_options);
    }
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume, "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                CLAIM_LABEL: claim,
                CLAIM_NAMESPACE_LABEL: namespace,
            }},
            "spec": spec,
        }),
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "spec": {
                "accessModes": modes,
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Ti"}},
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_mounted_by_its_path_inside_its_namespace_s_folder_only() {
        let url = |u: &str| BucketUrl::parse(u).unwrap();
        let folder = url("s3://b/namespaces/ns");
        let sub = |u: &str| sub_path(&folder, &url(u));
        assert_eq!(
            sub("s3://b/namespaces/ns/h/artifacts").as_deref(),
            Some("h/artifacts")
        );
        assert_eq!(sub("s3://b/namespaces/ns"), None, "the folder itself");
        assert_eq!(sub("s3://b/namespaces/nsx/h/artifacts"), None, "a sibling");
        assert_eq!(sub("s3://b/namespaces/other/h"), None);
        assert_eq!(sub("s3://c/namespaces/ns/h"), None, "another bucket");
        assert_eq!(sub("gs://b/namespaces/ns/h"), None, "another scheme");
        assert_eq!(sub("s3://b/namespaces/ns/../other/h"), None);
        // The bucket's root holds every folder.
        assert_eq!(
            sub_path(&url("s3://b"), &url("s3://b/h/uploads")).as_deref(),
            Some("h/uploads")
        );
        let volume = namespace_claim_volume(
            &folder,
            &url("s3://b/namespaces/ns/h/artifacts"),
            Access::ReadOnly,
        )
        .unwrap();
        let claim = volume.volume.persistent_volume_claim.unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("substratus-bucket-ro", Some(true))
        );
        let err = namespace_claim_volume(&folder, &url("s3://b/h"), Access::ReadWrite).unwrap_err();
        assert!(err.to_string().contains("namespaces/ns"), "{err}");
        // Read-only and read-write volumes of a folder, and those of two namespaces, differ.
        let names = [
            namespace_volume_name("ns", &folder, Access::ReadOnly),
            namespace_volume_name("ns", &folder, Access::ReadWrite),
            namespace_volume_name("other", &folder, Access::ReadWrite),
        ];
        assert!(names[0] != names[1] && names[1] != names[2], "{names:?}");
    }

    #[test]
    fn a_volume_is_bound_to_its_one_claim_and_retained() {
        let url = BucketUrl::parse("s3://b/h/artifacts").unwrap();
        let objs = objects(
            "ns",
            &url,
            CsiSource {
                driver: "d".into(),
                volume_handle: "vh".into(),
                volume_attributes: json!({"bucketName": "b"}),
                secret_ref: None,
                mount_options: vec!["prefix h/artifacts/".into()],
            },
        );
        let (pv, pvc) = (&objs[0], &objs[1]);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["claimRef"]["name"], pvc["metadata"]["name"]);
        assert_eq!(pv["spec"]["claimRef"]["namespace"], "ns");
        assert_eq!(pvc["spec"]["volumeName"], pv["metadata"]["name"]);
        assert_eq!(
            pv["metadata"]["labels"][CLAIM_LABEL],
            pvc["metadata"]["name"]
        );
        assert_eq!(pv["spec"]["mountOptions"][0], "prefix h/artifacts/");
        assert!(pv["spec"]["csi"].get("nodePublishSecretRef").is_none());
        // Another namespace mounting the same prefix gets its own volume.
        assert_ne!(volume_name("ns", &url), volume_name("other", &url));
        assert!(claim_name(&url).len() <= 63);
    }
}

/// What every backend's build of an uploaded context must look like: the archive mounted
/// read-only for the operator's image, which checks and unpacks it into a workspace, and a
/// builder that reads only that workspace.
#[cfg(test)]
pub(crate) mod upload_check {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use substratus_core::cloud::Cloud;
    use substratus_core::plan::Parent;
    use substratus_core::plan::build::{BuildInput, BuildPlan, BuildSettings, plan};
    use substratus_crds::{Build, BuildUpload};

    pub const MD5: &str = "0123456789abcdef0123456789abcdef";

    /// The pod template of the build Job of Model `ns/m` from an upload.
    pub fn build_pod(cloud: &dyn Cloud, settings: &BuildSettings) -> PodTemplateSpec {
        build_plan(cloud, settings)
            .job()
            .cloned()
            .unwrap()
            .spec
            .unwrap()
            .template
    }

    /// The build plan of Model `ns/m` from an upload.
    pub fn build_plan(cloud: &dyn Cloud, settings: &BuildSettings) -> BuildPlan {
        let parent = Parent {
            kind: substratus_core::names::Kind::Model,
            name: "m".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            generation: Some(1),
        };
        let build = Build {
            git: None,
            upload: Some(BuildUpload {
                md5_checksum: MD5.into(),
                request_id: "r1".into(),
            }),
        };
        let input = BuildInput {
            parent: &parent,
            build: &build,
            spec_image: None,
            uploaded: true,
            job: None,
            pods: &[],
            settings,
        };
        plan(&input, cloud)
    }

    /// Asserts the archive is checked and unpacked before the builder runs, and returns the
    /// pod template for the backend's own checks of the volume.
    pub fn checked_before_the_builder(cloud: &dyn Cloud) -> PodTemplateSpec {
        let template = build_pod(
            cloud,
            &BuildSettings {
                context_image: Some("operator:1".into()),
                ..Default::default()
            },
        );
        let pod = template.spec.as_ref().unwrap();
        let init = &pod.init_containers.as_ref().expect("an init container")[0];
        assert_eq!(init.image.as_deref(), Some("operator:1"));
        assert_eq!(
            init.args.as_ref().unwrap(),
            &[
                "unpack-context".to_owned(),
                "--archive=/upload/latest.tar.gz".into(),
                format!("--md5={MD5}"),
                "--into=/workspace".into(),
            ]
        );
        let upload = init
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "upload")
            .expect("the upload mounted for the check");
        assert_eq!(upload.read_only, Some(true));
        let builder = &pod.containers[0];
        let args = builder.args.as_ref().unwrap();
        assert!(
            args.contains(&"--context=dir:///workspace".to_owned()),
            "{args:?}"
        );
        assert!(
            !args
                .iter()
                .any(|a| a.contains("://") && a.contains("uploads")),
            "the builder is never pointed at the archive: {args:?}"
        );
        let mounted: Vec<_> = builder
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounted, ["workspace"], "the builder never sees the archive");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "upload")
            .expect("the upload volume");
        if let Some(csi) = &volume.csi {
            assert_eq!(csi.read_only, Some(true));
        }
        let unpack = pod
            .init_containers
            .iter()
            .flatten()
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .find(|m| m.name == "upload")
            .expect("the unpacking step mounts the upload");
        assert_eq!(unpack.read_only, Some(true), "{unpack:?}");
        if let Some(claim) = &volume.persistent_volume_claim {
            // A namespace's read-write claim is mounted read-only at the archive's folder.
            if unpack.sub_path.is_none() {
                assert_eq!(claim.read_only, Some(true));
            }
        }
        template
    }
}
