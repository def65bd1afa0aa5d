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
use substratus_core::cloud::{Access, ArtifactPrefix, BucketUrl, BucketVolume, UploadContext};
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
    let claim = claim_name(url);
    let volume = volume_name(namespace, url);
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
    let mut spec = json!({
        "capacity": {"storage": "1Ti"},
        "accessModes": ["ReadWriteMany"],
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
                "accessModes": ["ReadWriteMany"],
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
        if let Some(claim) = &volume.persistent_volume_claim {
            assert_eq!(claim.read_only, Some(true));
        }
        template
    }
}
