//! A workload Job as the planners see it: its generation, the inputs it ran on, and how it
//! ended (and a build Job: the image and source it builds).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;

use super::build::{ATTEMPT_ANNOTATION, IMAGE_ANNOTATION, SOURCE_ANNOTATION};
use super::{GENERATION_ANNOTATION, input_generation_annotation};

/// What a Job of this object is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    Running,
    Complete,
    Failed { message: String },
}

/// The object's Job as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob {
    /// The parent generation the Job was created for.
    pub generation: Option<i64>,
    /// The generations of the base Model's (`model`) and Dataset's (`data`) runs whose
    /// artifacts the Job was given, as recorded on it.
    pub inputs: BTreeMap<String, i64>,
    pub outcome: JobOutcome,
    /// The Job is being deleted.
    pub deleting: bool,
}

impl ObservedJob {
    /// Reads a Job's generation annotation, deletion and Complete/Failed conditions.
    pub fn from_job(job: &Job) -> ObservedJob {
        let generation = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(GENERATION_ANNOTATION))
            .and_then(|g| g.parse().ok());
        let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
        let is = |t: &str| {
            conditions
                .into_iter()
                .flatten()
                .find(|c| c.type_ == t && c.status == "True")
        };
        let outcome = if is("Complete").is_some() {
            JobOutcome::Complete
        } else if let Some(failed) = is("Failed") {
            JobOutcome::Failed {
                message: format!(
                    "Job {} failed: {}{}",
                    job.metadata.name.as_deref().unwrap_or(""),
                    failed.reason.as_deref().unwrap_or("Failed"),
                    failed
                        .message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            }
        } else {
            JobOutcome::Running
        };
        let inputs = ["model", "data"]
            .into_iter()
            .filter_map(|subdir| {
                let recorded = job
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(&input_generation_annotation(subdir))?;
                Some((subdir.to_owned(), recorded.parse().ok()?))
            })
            .collect();
        ObservedJob {
            generation,
            inputs,
            outcome,
            deleting: job.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// The build Job as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedBuildJob {
    pub image: Option<String>,
    pub source: Option<String>,
    pub attempt: Option<String>,
    pub outcome: JobOutcome,
    pub deleting: bool,
}

impl ObservedBuildJob {
    pub fn from_job(job: &Job) -> ObservedBuildJob {
        let annotation = |k: &str| {
            job.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .cloned()
        };
        let o = ObservedJob::from_job(job);
        ObservedBuildJob {
            image: annotation(IMAGE_ANNOTATION),
            source: annotation(SOURCE_ANNOTATION),
            attempt: annotation(ATTEMPT_ANNOTATION),
            outcome: o.outcome,
            deleting: o.deleting,
        }
    }
}
