//! Condition types and reasons, and the merge that keeps `lastTransitionTime` still unless a
//! condition flips, so that an unchanged object yields a byte-identical status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const UPLOADED: &str = "Uploaded";
    pub const BUILT: &str = "Built";
    pub const COMPLETE: &str = "Complete";
    pub const SERVING: &str = "Serving";
    /// A Model's artifacts were made from its base Model's and Dataset's current artifacts.
    pub const UP_TO_DATE: &str = "UpToDate";
}

/// Reasons. The original's names are kept; `DatasetNotReady` drops the original's typo.
pub mod reasons {
    pub const AWAITING_IMAGE: &str = "AwaitingImage";
    pub const AWAITING_UPLOAD: &str = "AwaitingUpload";
    pub const UPLOAD_FOUND: &str = "UploadFound";
    pub const UPLOAD_MISMATCH: &str = "UploadMismatch";
    pub const BUILD_FAILED: &str = "BuildFailed";
    pub const BASE_MODEL_NOT_FOUND: &str = "BaseModelNotFound";
    pub const BASE_MODEL_NOT_READY: &str = "BaseModelNotReady";
    pub const DATASET_NOT_FOUND: &str = "DatasetNotFound";
    pub const DATASET_NOT_READY: &str = "DatasetNotReady";
    pub const MODEL_NOT_FOUND: &str = "ModelNotFound";
    pub const MODEL_NOT_READY: &str = "ModelNotReady";
    pub const ADAPTER_NOT_FOUND: &str = "AdapterNotFound";
    pub const ADAPTER_NOT_READY: &str = "AdapterNotReady";
    pub const ADAPTER_NOT_OF_BASE: &str = "AdapterNotOfBase";
    pub const JOB_NOT_COMPLETE: &str = "JobNotComplete";
    pub const JOB_COMPLETE: &str = "JobComplete";
    pub const JOB_FAILED: &str = "JobFailed";
    pub const DEPLOYMENT_NOT_READY: &str = "DeploymentNotReady";
    pub const DEPLOYMENT_READY: &str = "DeploymentReady";
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    pub const SUSPENDED: &str = "Suspended";
    pub const POD_NOT_READY: &str = "PodNotReady";
    pub const POD_READY: &str = "PodReady";
    pub const POD_FAILED: &str = "PodFailed";
    pub const GPU_TYPE_UNAVAILABLE: &str = "GPUTypeUnavailable";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    pub const OOM_KILLED: &str = "OOMKilled";
    pub const CONTAINER_CONFIG_ERROR: &str = "ContainerConfigError";

    /// Reasons read from a workload's pods (`plan::pod_problem`): they hold only while the
    /// pods stay in that state, so a pod that recovers must be looked at again.
    pub const FROM_PODS: [&str; 5] = [
        UNSCHEDULABLE,
        IMAGE_PULL_FAILED,
        CRASH_LOOP_BACK_OFF,
        OOM_KILLED,
        CONTAINER_CONFIG_ERROR,
    ];
    pub const INPUTS_UNCHANGED: &str = "InputsUnchanged";
    pub const BASE_MODEL_CHANGED: &str = "BaseModelChanged";
    pub const DATASET_CHANGED: &str = "DatasetChanged";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const CLOUD_ERROR: &str = "CloudError";
    /// `status.artifacts.url` names a location that is not the object's own.
    pub const FOREIGN_ARTIFACTS_URL: &str = "ForeignArtifactsURL";
}

/// A condition as a planner wants it; [`merge`] turns it into a `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Desired {
        Desired {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Replaces the conditions of the types in `desired`, keeps the others (owned by other
/// controllers), and keeps `lastTransitionTime` of a condition whose status did not change.
/// The result is sorted by type.
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        let status = status_str(d.status);
        let previous = existing.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: d.type_.to_owned(),
            status: status.to_owned(),
            reason: d.reason.to_owned(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` is True for `generation`.
pub fn is_true_for(conditions: &[Condition], type_: &str, generation: Option<i64>) -> bool {
    find(conditions, type_)
        .is_some_and(|c| c.status == "True" && c.observed_generation == generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0 = t("2026-01-01T00:00:00Z");
        let t1 = t("2026-01-01T00:01:00Z");
        let first = merge(
            &[],
            &[Desired::new("Complete", false, "JobNotComplete", "waiting")],
            Some(1),
            &t0,
        );
        let same = merge(
            &first,
            &[Desired::new("Complete", false, "JobNotComplete", "still")],
            Some(1),
            &t1,
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].message, "still");
        let flipped = merge(
            &same,
            &[Desired::new("Complete", true, "JobComplete", "")],
            Some(1),
            &t1,
        );
        assert_eq!(flipped[0].last_transition_time, t1);
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn conditions_of_other_types_are_kept_and_sorted() {
        let t0 = t("2026-01-01T00:00:00Z");
        let built = merge(
            &[],
            &[Desired::new("Built", true, "JobComplete", "")],
            Some(2),
            &t0,
        );
        let both = merge(
            &built,
            &[Desired::new("Ready", false, "JobNotComplete", "")],
            Some(3),
            &t0,
        );
        let types: Vec<_> = both.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Built", "Ready"]);
        assert_eq!(both[0].observed_generation, Some(2));
        assert!(is_true_for(&both, "Built", Some(2)));
        assert!(!is_true_for(&both, "Built", Some(3)));
    }
}
