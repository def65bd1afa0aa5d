//! Where an object's artifacts live in the bucket, and the cloud's objects for that prefix
//! (static volumes, claims) as children of the object.

use super::{Child, Parent};
use crate::cloud::{ArtifactPrefix, BucketUrl, Cloud};
use crate::names;

/// The storage prefix of an object: the URL recorded in status if any, else computed.
pub fn artifact_prefix(
    parent: &Parent,
    recorded: Option<&str>,
    cloud: &dyn Cloud,
) -> ArtifactPrefix {
    let config = cloud.config();
    let hash = names::storage_prefix(
        &config.cluster_name,
        &parent.namespace,
        parent.kind,
        &parent.name,
    );
    let url = recorded
        .and_then(|u| BucketUrl::parse(u).ok())
        .unwrap_or_else(|| config.artifact_bucket.join(&hash));
    ArtifactPrefix {
        namespace: parent.namespace.clone(),
        hash,
        url,
    }
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
            let hash = super::spec_hash(&v);
            v["metadata"]["annotations"][super::SPEC_HASH_ANNOTATION] =
                serde_json::Value::String(hash);
            Child::Raw(v)
        })
        .collect()
}
