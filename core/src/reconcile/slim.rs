//! What the caches keep of an object: only what the reconcilers read. At 10,000 objects the
//! rest (pod templates, managedFields, other tools' annotations) would be most of the
//! operator's memory.

use std::marker::PhantomData;

use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// An object of kind `K` with its metadata and status and no spec. It is deserialized
/// straight from the API's JSON: the spec is skipped by the parser and never stored, and the
/// value is a few hundred bytes instead of the kilobytes of `K` (whose spec is inline even
/// when `None`).
#[derive(Deserialize, Debug)]
#[serde(bound(deserialize = "S: Deserialize<'de>"))]
pub struct StatusOnly<K, S> {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<S>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K, S: Clone> Clone for StatusOnly<K, S> {
    fn clone(&self) -> Self {
        StatusOnly {
            metadata: self.metadata.clone(),
            status: self.status.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: k8s_openapi::Resource, S> k8s_openapi::Resource for StatusOnly<K, S> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Resource, S> k8s_openapi::Metadata for StatusOnly<K, S> {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Annotations of this prefix are the operator's own; the only ones a reconcile reads on its
/// children.
const OWN_PREFIX: &str = "substratus.ai/";

/// Written by `kubectl apply`: a full copy of the object's spec, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Which labels of a cached object are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// Read (pods are found by their run labels).
    Keep,
    /// Never read: the watch already selected on them.
    Drop,
}

/// Clears what no reconcile reads on a child: managedFields, other tools' annotations,
/// identity and bookkeeping (uid, resourceVersion, creation time, generation, finalizers),
/// and the labels unless asked to keep them. Owner references stay (they route a child's
/// event to its parent); so does the deletion time (a child being deleted is waited for).
/// The watch resumes from the versions of the events it read, not from the cached objects.
pub fn child_meta(meta: &mut ObjectMeta, labels: Labels) {
    meta.managed_fields = None;
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    meta.finalizers = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| k.starts_with(OWN_PREFIX));
    }
    if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        meta.annotations = None;
    }
    if labels == Labels::Drop {
        meta.labels = None;
    }
}

/// Clears what no reconcile reads in a Job's status: times and pod tracking. Counts and
/// conditions (type, status, reason, message) stay.
pub fn job_status(status: &mut JobStatus) {
    status.start_time = None;
    status.completion_time = None;
    status.uncounted_terminated_pods = None;
    for c in status.conditions.iter_mut().flatten() {
        c.last_probe_time = None;
        c.last_transition_time = None;
    }
}

/// Clears what no reconcile reads in a Pod's status: addresses, times, container ids and
/// resources. Phase, conditions and the containers' names, images and states stay (they
/// explain a pod that waits or failed).
pub fn pod_status(status: &mut PodStatus) {
    status.host_ip = None;
    status.host_ips = None;
    status.pod_ip = None;
    status.pod_ips = None;
    status.start_time = None;
    status.qos_class = None;
    status.nominated_node_name = None;
    status.resize = None;
    status.resource_claim_statuses = None;
    status.ephemeral_container_statuses = None;
    for c in status.conditions.iter_mut().flatten() {
        c.last_probe_time = None;
        c.last_transition_time = None;
    }
    let containers = status
        .container_statuses
        .iter_mut()
        .chain(status.init_container_statuses.iter_mut())
        .flatten();
    for c in containers {
        c.container_id = None;
        c.image_id = String::new();
        c.last_state = None;
        c.allocated_resources = None;
        c.allocated_resources_status = None;
        c.resources = None;
        c.user = None;
        c.volume_mounts = None;
        if let Some(state) = c.state.as_mut() {
            if let Some(t) = state.terminated.as_mut() {
                t.container_id = None;
                t.started_at = None;
                t.finished_at = None;
            }
            state.running = None;
        }
    }
}

/// Clears what no reconcile reads on a Substratus object: managedFields and the copy that
/// `kubectl apply` keeps of it. Everything else (labels, annotations) stays: users' tools
/// may put there what a future reconcile reads.
pub fn primary_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::{Resource, ResourceExt};
    use serde_json::json;

    fn job_json() -> serde_json::Value {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {
                "name": "m-modeller", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "labels": {"app.kubernetes.io/managed-by": "substratus", "role": "run"},
                "annotations": {"substratus.ai/spec-hash": "abc", "other.io/x": "y", LAST_APPLIED: "{}"},
                "ownerReferences": [{"apiVersion": "substratus.ai/v1", "kind": "Model", "name": "m", "uid": "p1", "controller": true}],
                "managedFields": [{"manager": "substratus", "operation": "Apply"}]
            },
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        })
    }

    #[test]
    fn a_status_only_object_reads_metadata_and_status_and_skips_the_spec() {
        let j: StatusOnly<Job, JobStatus> = serde_json::from_value(job_json()).unwrap();
        assert_eq!(j.metadata.name.as_deref(), Some("m-modeller"));
        assert_eq!(j.status.as_ref().and_then(|s| s.succeeded), Some(1));
        // The kind's identity is the Job's: same URL, same owner-reference routing.
        assert_eq!(StatusOnly::<Job, JobStatus>::kind(&()), "Job");
        assert_eq!(StatusOnly::<Job, JobStatus>::plural(&()), "jobs");
        assert_eq!(StatusOnly::<Job, JobStatus>::api_version(&()), "batch/v1");
        assert_eq!(j.owner_references()[0].name, "m");
        // And it is much smaller than the Job it stands for.
        assert!(std::mem::size_of::<StatusOnly<Job, JobStatus>>() * 3 < std::mem::size_of::<Job>());
    }

    #[test]
    fn a_status_only_object_without_status_deserializes() {
        let mut v = job_json();
        v.as_object_mut().unwrap().remove("status");
        let j: StatusOnly<Job, JobStatus> = serde_json::from_value(v).unwrap();
        assert!(j.status.is_none());
    }

    #[test]
    fn child_metadata_keeps_only_what_reconciles_read() {
        let j: StatusOnly<Job, JobStatus> = serde_json::from_value(job_json()).unwrap();
        let mut dropped = j.metadata.clone();
        child_meta(&mut dropped, Labels::Drop);
        assert!(dropped.managed_fields.is_none());
        assert!(dropped.labels.is_none());
        assert_eq!(
            dropped
                .annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            vec!["substratus.ai/spec-hash"]
        );
        assert_eq!(dropped.owner_references.as_ref().unwrap().len(), 1);
        assert!(dropped.uid.is_none() && dropped.resource_version.is_none());

        let mut kept = j.metadata.clone();
        child_meta(&mut kept, Labels::Keep);
        assert_eq!(kept.labels.as_ref().unwrap()["role"], "run");

        // No annotation of ours left: none at all rather than an empty map.
        let mut bare = j.metadata;
        bare.annotations
            .as_mut()
            .unwrap()
            .remove("substratus.ai/spec-hash");
        child_meta(&mut bare, Labels::Drop);
        assert!(bare.annotations.is_none());
    }

    #[test]
    fn primary_metadata_drops_only_managed_fields_and_the_last_applied_copy() {
        let j: StatusOnly<Job, JobStatus> = serde_json::from_value(job_json()).unwrap();
        let mut meta = j.metadata;
        primary_meta(&mut meta);
        assert!(meta.managed_fields.is_none());
        let a = meta.annotations.unwrap();
        assert!(!a.contains_key(LAST_APPLIED));
        assert_eq!(a["other.io/x"], "y");
        assert_eq!(meta.labels.unwrap()["role"], "run");
    }

    #[test]
    fn statuses_keep_what_explains_a_job_or_pod() {
        let mut job: StatusOnly<Job, JobStatus> = serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "status": {"failed": 2, "startTime": "2026-11-27T00:00:00Z",
                       "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                       "message": "Job has reached the specified backoff limit",
                                       "lastTransitionTime": "2026-11-27T00:00:00Z"}]}
        }))
        .unwrap();
        job_status(job.status.as_mut().unwrap());
        let s = job.status.unwrap();
        assert_eq!(s.failed, Some(2));
        assert!(s.start_time.is_none());
        let c = &s.conditions.unwrap()[0];
        assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert!(c.message.is_some() && c.last_transition_time.is_none());

        let mut pod: StatusOnly<Pod, PodStatus> = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "podIP": "10.0.0.1", "hostIP": "10.0.1.1",
                       "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}],
                       "containerStatuses": [{"name": "c", "image": "i:1", "imageID": "sha256:abc", "ready": false,
                           "restartCount": 0, "containerID": "containerd://x",
                           "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}],
                       "initContainerStatuses": [{"name": "clone", "image": "git", "imageID": "sha256:def", "ready": false,
                           "restartCount": 0, "state": {"terminated": {"exitCode": 128, "message": "no repo",
                           "finishedAt": "2026-11-27T00:00:00Z"}}}]}
        }))
        .unwrap();
        pod_status(pod.status.as_mut().unwrap());
        let s = pod.status.unwrap();
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert!(s.pod_ip.is_none() && s.host_ip.is_none());
        assert_eq!(
            s.conditions.unwrap()[0].message.as_deref(),
            Some("0/3 nodes")
        );
        let c = &s.container_statuses.unwrap()[0];
        assert_eq!(
            (c.name.as_str(), c.image.as_str(), c.image_id.as_str()),
            ("c", "i:1", "")
        );
        assert!(c.container_id.is_none());
        let w = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("ImagePullBackOff"));
        let t = s.init_container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!((t.exit_code, t.message.as_deref()), (128, Some("no repo")));
        assert!(t.finished_at.is_none());
    }
}
