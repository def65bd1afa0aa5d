//! Where an object's artifacts live in the bucket, and the cloud's objects for that prefix
//! (static volumes, claims) as children of the object.

use super::{Child, Parent};
use crate::cloud::{ArtifactPrefix, Cloud};
use crate::names;

/// The storage prefix of an object: the configured bucket, the namespace's folder when
/// namespaces have identities of their own, and the hash of the object's identity. Nothing
/// in its status changes it: a status is writable by whoever may write
/// `*/status`, and a location taken from it would point the operator's credentials (mounts,
/// volumes, signed URLs) at any path of the bucket.
pub fn artifact_prefix(parent: &Parent, cloud: &dyn Cloud) -> ArtifactPrefix {
    let config = cloud.config();
    let hash = names::storage_prefix(
        &config.cluster_name,
        &parent.namespace,
        parent.kind,
        &parent.name,
    );
    ArtifactPrefix {
        kind: parent.kind,
        namespace: parent.namespace.clone(),
        name: parent.name.clone(),
        url: config.namespace_folder(&parent.namespace).join(&hash),
        hash,
    }
}

/// Why a recorded `status.artifacts.url` is refused: it is not the object's own location
/// (`prefix`). `None` when nothing is recorded or it is that location (the operator wrote it).
pub fn foreign_location(recorded: Option<&str>, prefix: &ArtifactPrefix) -> Option<String> {
    let recorded = recorded?;
    let own = prefix.url.to_string();
    if recorded.trim_end_matches('/') == own {
        return None;
    }
    Some(format!(
        "status.artifacts.url is {recorded:?}, not this object's location {own} (the configured \
         bucket and the object's prefix): nothing is mounted, built or signed for it. To use \
         {own}, remove the field: kubectl patch --subresource=status --type=json \
         -p '[{{\"op\":\"remove\",\"path\":\"/status/artifacts/url\"}}]'; artifacts kept \
         elsewhere must be copied there first"
    ))
}

/// Prefix objects from the cloud, owned by `parent` when namespaced.
pub fn owned_prefix_objects(
    parent: &Parent,
    prefix: &ArtifactPrefix,
    cloud: &dyn Cloud,
) -> Vec<Child> {
    own_objects(parent, cloud.prefix_objects(prefix))
}

/// Cloud objects as children of `parent`: namespaced ones owned by it, all hashed.
pub fn own_objects(parent: &Parent, objects: Vec<serde_json::Value>) -> Vec<Child> {
    objects
        .into_iter()
        .map(|mut v| {
            if v["metadata"].get("namespace").is_some() {
                v["metadata"]["ownerReferences"] =
                    serde_json::to_value(vec![parent.owner_reference()]).unwrap_or_default();
            }
            hashed(v)
        })
        .collect()
}

/// Cloud objects of a whole namespace ([`Cloud::namespace_objects`]): owned by no object,
/// hashed so that an unchanged one is not written again.
pub fn namespace_objects(cloud: &dyn Cloud, namespace: &str) -> Vec<Child> {
    cloud
        .namespace_objects(namespace)
        .into_iter()
        .map(hashed)
        .collect()
}

fn hashed(mut v: serde_json::Value) -> Child {
    let hash = super::spec_hash(&v);
    v["metadata"]["annotations"][super::SPEC_HASH_ANNOTATION] = serde_json::Value::String(hash);
    Child::Raw(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{BucketUrl, Tenancy};
    use crate::fake::FakeCloud;
    use crate::plan::fixtures::parent;

    fn with(tenancy: Tenancy, bucket: &str) -> FakeCloud {
        let mut config = FakeCloud::default().config().clone();
        config.artifact_bucket = BucketUrl::parse(bucket).unwrap();
        config.tenancy = tenancy;
        FakeCloud::new(config)
    }

    #[test]
    fn a_namespace_with_its_own_identity_keeps_its_prefixes_in_its_own_folder() {
        let hash = names::storage_prefix("test-cluster", "ns", parent().kind, "m");
        let shared = artifact_prefix(&parent(), &with(Tenancy::Shared, "s3://b/root"));
        assert_eq!(shared.url.to_string(), format!("s3://b/root/{hash}"));
        let own = artifact_prefix(&parent(), &with(Tenancy::Namespace, "s3://b/root"));
        assert_eq!(
            own.url.to_string(),
            format!("s3://b/root/namespaces/ns/{hash}")
        );
        assert_eq!(own.hash, hash);
        // Every folder of the object is under its namespace's folder, which is what the
        // namespace's identity is allowed.
        let folder = with(Tenancy::Namespace, "s3://b/root")
            .config()
            .namespace_folder("ns");
        assert!(
            own.artifacts()
                .url
                .path
                .starts_with(&format!("{}/", folder.path))
        );
        assert!(
            own.uploads()
                .url
                .path
                .starts_with(&format!("{}/", folder.path))
        );
        // A recorded URL of the shared layout is foreign under namespace tenancy.
        assert!(foreign_location(Some(&shared.url.to_string()), &own).is_some());
        assert_eq!("namespace".parse(), Ok(Tenancy::Namespace));
        let err = "tenant".parse::<Tenancy>().unwrap_err();
        assert!(err.starts_with("TENANCY:"), "{err}");
    }
}
