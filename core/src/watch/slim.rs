//! What the caches keep of an object: only what the reconcilers read. At 10,000 objects the
//! rest (pod templates, managedFields, other tools' annotations) would be most of the
//! operator's memory.

use std::marker::PhantomData;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, Time};
use serde::Deserialize;

use crate::names::Kind;

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

/// Whether someone other than the operator changed the content of a child (its `spec`, or a
/// ConfigMap's `data`) after the operator last applied it: `kubectl scale`, `kubectl set
/// image`, `kubectl edit` and other tools' updates each leave a managedFields entry of their
/// own, stamped with the time of the change. Writes to `status` and to metadata (the
/// Deployment controller's revision annotation, other tools' labels) are not drift. A child
/// the operator never applied (created once, like a Job) has nothing to compare with.
/// Times are to the second: a change made within the same second as the operator's last
/// apply is not seen until something changes it again.
pub fn drifted(meta: &ObjectMeta, manager: &str) -> bool {
    let Some(entries) = meta.managed_fields.as_deref() else {
        return false;
    };
    let on_object = |e: &&ManagedFieldsEntry| {
        matches!(e.subresource.as_deref(), None | Some("") | Some("scale"))
    };
    let time = |e: &ManagedFieldsEntry| e.time.as_ref().map(|t| t.0);
    let ours = entries
        .iter()
        .filter(on_object)
        .filter(|e| {
            e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some("Apply")
        })
        .filter_map(time)
        .max();
    let Some(ours) = ours else {
        return false;
    };
    entries
        .iter()
        .filter(on_object)
        .filter(|e| e.manager.as_deref() != Some(manager))
        .filter(|e| touches_content(e))
        .filter_map(time)
        .any(|t| t > ours)
}

/// Whether a managedFields entry owns fields outside metadata and status.
fn touches_content(e: &ManagedFieldsEntry) -> bool {
    e.fields_v1
        .as_ref()
        .and_then(|f| f.0.as_object())
        .is_some_and(|fields| {
            fields
                .keys()
                .any(|k| k.starts_with("f:") && k != "f:metadata" && k != "f:status")
        })
}

/// Drops the spec-hash annotation of a child someone else changed (see [`drifted`]), so that
/// the next reconcile finds no hash to match and applies the child again.
pub fn forget_hash_if_drifted(meta: &mut ObjectMeta, manager: &str) {
    if drifted(meta, manager)
        && let Some(a) = meta.annotations.as_mut()
    {
        a.remove(crate::plan::SPEC_HASH_ANNOTATION);
    }
}

/// What a reconcile reads of a Job: the operator's own annotations, whether it is being
/// deleted, the conditions that hold, and which Substratus object controls it. About a
/// tenth of the Job's metadata and status (an `ObjectMeta` alone is 360 bytes inline, and
/// one annotation costs a half-kilobyte map node).
#[derive(Clone, Debug, PartialEq)]
pub struct JobSummary {
    annotations: Box<[(Box<str>, Box<str>)]>,
    deletion: Option<Time>,
    /// Conditions whose status is True.
    holds: Box<[Holding]>,
    /// The controlling Substratus object.
    pub owner: Option<Owner>,
}

/// A Substratus object by kind and name, in the namespace of the child that names it.
pub type Owner = (Kind, Box<str>);

/// A condition whose status is True: type, reason, message.
#[derive(Clone, Debug, PartialEq)]
struct Holding {
    type_: Box<str>,
    reason: Option<Box<str>>,
    message: Option<Box<str>>,
}

impl JobSummary {
    /// No state yet: no condition holds and no deletion is under way.
    pub fn is_blank(&self) -> bool {
        self.holds.is_empty() && self.deletion.is_none()
    }

    /// Summarizes a Job read as metadata and status.
    pub fn of(job: &StatusOnly<Job, JobStatus>) -> JobSummary {
        let m = &job.metadata;
        let boxed = |s: &Option<String>| s.as_deref().map(Box::from);
        JobSummary {
            annotations: m
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with(OWN_PREFIX))
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            deletion: m.deletion_timestamp.clone(),
            holds: job
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .filter(|c| c.status == "True")
                .map(|c| Holding {
                    type_: c.type_.as_str().into(),
                    reason: boxed(&c.reason),
                    message: boxed(&c.message),
                })
                .collect(),
            owner: controller_of(m),
        }
    }

    /// One of the Job's (own) annotations.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// The Job as the reconcilers read it: metadata and status, without spec.
    pub fn to_job(&self, namespace: &str, name: &str) -> Job {
        let annotations: std::collections::BTreeMap<String, String> = self
            .annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let conditions: Vec<JobCondition> = self
            .holds
            .iter()
            .map(|h| JobCondition {
                type_: h.type_.to_string(),
                status: "True".into(),
                reason: h.reason.as_deref().map(Into::into),
                message: h.message.as_deref().map(Into::into),
                ..Default::default()
            })
            .collect();
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                annotations: (!annotations.is_empty()).then_some(annotations),
                deletion_timestamp: self.deletion.clone(),
                ..Default::default()
            },
            status: Some(JobStatus {
                conditions: (!conditions.is_empty()).then_some(conditions),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The Substratus object that controls a child (its controller owner reference).
pub fn controller_of(m: &ObjectMeta) -> Option<Owner> {
    m.owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true) && o.api_version.starts_with(OWN_PREFIX))
        .find_map(|o| {
            Kind::ALL
                .into_iter()
                .find(|k| k.name() == o.kind)
                .map(|k| (k, o.name.as_str().into()))
        })
}

/// Clears what no reconcile reads in a Pod's status: addresses, times, container ids and
/// resources. Phase, conditions and the containers' names, images and states stay (they
/// explain a pod that waits or failed), and the last exit of a container that waits to
/// restart (why it keeps failing).
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
        let restarting = c.state.as_ref().is_some_and(|s| s.waiting.is_some());
        c.last_state = c
            .last_state
            .take()
            .filter(|_| restarting)
            .and_then(|s| s.terminated)
            .map(|mut t| {
                t.container_id = None;
                t.started_at = None;
                t.finished_at = None;
                k8s_openapi::api::core::v1::ContainerState {
                    terminated: Some(t),
                    ..Default::default()
                }
            });
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

    fn managed(entries: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json!({
            "name": "d", "annotations": {"substratus.ai/spec-hash": "h1"},
            "managedFields": entries
        }))
        .unwrap()
    }

    fn entry(
        manager: &str,
        op: &str,
        time: &str,
        sub: Option<&str>,
        fields: serde_json::Value,
    ) -> serde_json::Value {
        let mut e = json!({"manager": manager, "operation": op, "time": time,
            "fieldsType": "FieldsV1", "fieldsV1": fields});
        if let Some(sub) = sub {
            e["subresource"] = json!(sub);
        }
        e
    }

    #[test]
    fn a_child_changed_by_someone_else_after_the_last_apply_has_drifted() {
        let ours = entry(
            "op",
            "Apply",
            "2026-11-30T10:00:00Z",
            None,
            json!({"f:metadata": {}, "f:spec": {"f:replicas": {}}}),
        );
        // Only our own apply: in step.
        assert!(!drifted(&managed(json!([ours.clone()])), "op"));
        // `kubectl scale` (the scale subresource), `kubectl set image`, `kubectl edit`.
        for (manager, sub) in [
            ("kubectl", Some("scale")),
            ("kubectl-set", None),
            ("kubectl-edit", None),
        ] {
            let later = entry(
                manager,
                "Update",
                "2026-11-30T10:05:00Z",
                sub,
                json!({"f:spec": {"f:replicas": {}}}),
            );
            assert!(
                drifted(&managed(json!([ours.clone(), later])), "op"),
                "{manager}"
            );
        }
        // A ConfigMap's data edited.
        let data = entry(
            "kubectl-edit",
            "Update",
            "2026-11-30T10:05:00Z",
            None,
            json!({"f:data": {"f:params.json": {}}}),
        );
        assert!(drifted(&managed(json!([ours.clone(), data])), "op"));
        // Edits older than our last apply were undone by it.
        let before = entry(
            "kubectl-edit",
            "Update",
            "2026-11-30T09:00:00Z",
            None,
            json!({"f:spec": {}}),
        );
        assert!(!drifted(&managed(json!([ours.clone(), before])), "op"));
        // Status writes and metadata-only updates (the Deployment controller's revision
        // annotation, another tool's label) are not drift.
        let status = entry(
            "kube-controller-manager",
            "Update",
            "2026-11-30T10:05:00Z",
            Some("status"),
            json!({"f:status": {}}),
        );
        let revision = entry(
            "kube-controller-manager",
            "Update",
            "2026-11-30T10:05:00Z",
            None,
            json!({"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}),
        );
        let m = managed(json!([ours.clone(), status, revision]));
        assert!(!drifted(&m, "op"));
        // A child the operator created but never applied (a Job) has nothing to compare with.
        let created = entry(
            "op",
            "Update",
            "2026-11-30T10:00:00Z",
            None,
            json!({"f:spec": {}}),
        );
        let other = entry(
            "other",
            "Update",
            "2026-11-30T10:05:00Z",
            None,
            json!({"f:spec": {}}),
        );
        assert!(!drifted(&managed(json!([created, other])), "op"));
        assert!(!drifted(&ObjectMeta::default(), "op"));
    }

    #[test]
    fn a_drifted_child_loses_its_hash_so_that_it_is_applied_again() {
        let ours = entry(
            "op",
            "Apply",
            "2026-11-30T10:00:00Z",
            None,
            json!({"f:spec": {}}),
        );
        let later = entry(
            "kubectl-edit",
            "Update",
            "2026-11-30T10:00:01Z",
            None,
            json!({"f:spec": {}}),
        );
        let mut m = managed(json!([ours.clone(), later]));
        forget_hash_if_drifted(&mut m, "op");
        assert!(
            !m.annotations
                .unwrap()
                .contains_key("substratus.ai/spec-hash")
        );
        let mut m = managed(json!([ours]));
        forget_hash_if_drifted(&mut m, "op");
        assert_eq!(m.annotations.unwrap()["substratus.ai/spec-hash"], "h1");
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
    fn a_job_summary_keeps_what_a_reconcile_reads_of_a_job() {
        let mut v = job_json();
        v["metadata"]["deletionTimestamp"] = json!("2026-11-27T00:00:00Z");
        v["status"] = json!({"failed": 2, "startTime": "2026-11-27T00:00:00Z",
            "conditions": [
                {"type": "FailureTarget", "status": "False"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit",
                 "lastTransitionTime": "2026-11-27T00:00:00Z"}]});
        let job: StatusOnly<Job, JobStatus> = serde_json::from_value(v).unwrap();
        let summary = JobSummary::of(&job);
        assert_eq!(summary.owner, Some((Kind::Model, "m".into())));

        let j = summary.to_job("ns", "m-modeller");
        assert_eq!(
            (j.metadata.namespace.as_deref(), j.metadata.name.as_deref()),
            (Some("ns"), Some("m-modeller"))
        );
        // Only our annotations, and the deletion (a Job being deleted is waited for).
        let a = j.metadata.annotations.as_ref().unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), ["substratus.ai/spec-hash"]);
        assert!(j.metadata.deletion_timestamp.is_some());
        // Only the conditions that hold, with why.
        let c = j.status.unwrap().conditions.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            ("Failed", "True")
        );
        assert_eq!(c[0].reason.as_deref(), Some("BackoffLimitExceeded"));
        assert!(c[0].message.is_some() && c[0].last_transition_time.is_none());
        // What plans read comes out the same from the summary as from the Job.
        let full: Job = serde_json::from_value(job_json()).unwrap();
        let from_summary =
            JobSummary::of(&serde_json::from_value(job_json()).unwrap()).to_job("ns", "m-modeller");
        assert_eq!(
            crate::plan::job::ObservedJob::from_job(&full),
            crate::plan::job::ObservedJob::from_job(&from_summary)
        );
    }

    #[test]
    fn a_child_is_routed_to_its_controlling_substratus_object_only() {
        let mut m = ObjectMeta::default();
        let owner = |api: &str, kind: &str, controller| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: api.into(),
                kind: kind.into(),
                name: "x".into(),
                controller: Some(controller),
                ..Default::default()
            }
        };
        m.owner_references = Some(vec![
            owner("substratus.ai/v1", "Server", false),
            owner("apps/v1", "Deployment", true),
        ]);
        assert_eq!(controller_of(&m), None);
        m.owner_references
            .as_mut()
            .unwrap()
            .push(owner("substratus.ai/v1", "Notebook", true));
        assert_eq!(controller_of(&m), Some((Kind::Notebook, "x".into())));
    }

    #[test]
    fn a_pod_status_keeps_what_explains_a_pod() {
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

    #[test]
    fn the_last_exit_stays_only_while_a_container_waits_to_restart() {
        let status = |state: serde_json::Value| -> PodStatus {
            serde_json::from_value(json!({"phase": "Running", "containerStatuses": [{
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
                "state": state,
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                    "containerID": "containerd://x", "finishedAt": "2026-11-27T00:00:00Z"}}}]}))
            .unwrap()
        };
        let mut waiting = status(json!({"waiting": {"reason": "CrashLoopBackOff"}}));
        pod_status(&mut waiting);
        let last = waiting.container_statuses.unwrap()[0]
            .last_state
            .clone()
            .unwrap();
        let t = last.terminated.unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
        assert!(t.container_id.is_none() && t.finished_at.is_none());
        let mut running = status(json!({"running": {}}));
        pod_status(&mut running);
        assert!(running.container_statuses.unwrap()[0].last_state.is_none());
    }
}
