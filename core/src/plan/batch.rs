//! Model and Dataset: a Job that writes `/content/artifacts`, after the referenced base Model
//! and Dataset are Ready. A new generation of the object re-runs it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use substratus_crds::{Params, Resources};

use super::job::{JobOutcome, ObservedJob};
use super::storage::{artifact_prefix, foreign_location, owned_prefix_objects};
use super::{
    Blocked, Child, Deletable, GENERATION_ANNOTATION, Parent, Plan, RefState, SOON, Workload,
    input_generation_annotation, params_config_map, pod_problem, pod_template, stamp_hash,
};
use crate::cloud::Cloud;
use crate::conditions::{Desired, is_true_for, reasons, types};
use crate::names::{Kind, KindChildren};

/// The workload fields of a Model or Dataset spec.
#[derive(Clone, Debug)]
pub struct BatchSpec<'a> {
    pub image: Option<&'a str>,
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub params: &'a Params,
    pub resources: Option<&'a Resources>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct BatchInput<'a> {
    pub parent: Parent,
    pub spec: BatchSpec<'a>,
    /// Conditions currently in status.
    pub conditions: &'a [Condition],
    /// `status.artifacts.url`: accepted only when it is the object's own location.
    pub artifacts_url: Option<&'a str>,
    /// `spec.model` (Model only), `None` when not referenced.
    pub base_model: Option<RefState>,
    /// `spec.dataset` (Model only), `None` when not referenced.
    pub dataset: Option<RefState>,
    pub job: Option<ObservedJob>,
    /// Pods of the Job, to explain a Job that does not progress.
    pub pods: &'a [Pod],
}

/// What a Model's or Dataset's status adds to the plan: where its artifacts are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchExtra {
    pub artifacts_url: String,
}

/// What to do for a Model or Dataset.
pub type BatchPlan = Plan<BatchExtra>;

fn reference_blocked(base_model: &Option<RefState>, dataset: &Option<RefState>) -> Option<Blocked> {
    match base_model {
        Some(RefState::NotFound) => {
            return Some(Blocked {
                reason: reasons::BASE_MODEL_NOT_FOUND,
                message: "base Model spec.model.name not found".into(),
            });
        }
        Some(RefState::NotReady) => {
            return Some(Blocked {
                reason: reasons::BASE_MODEL_NOT_READY,
                message: "waiting for the base Model to be ready".into(),
            });
        }
        _ => {}
    }
    match dataset {
        Some(RefState::NotFound) => Some(Blocked {
            reason: reasons::DATASET_NOT_FOUND,
            message: "Dataset spec.dataset.name not found".into(),
        }),
        Some(RefState::NotReady) => Some(Blocked {
            reason: reasons::DATASET_NOT_READY,
            message: "waiting for the Dataset to be ready".into(),
        }),
        _ => None,
    }
}

/// Whether a completed run's inputs are still the current artifacts of its base Model and
/// Dataset: `UpToDate` False once either ran again since (the artifacts stay as they are:
/// re-running costs GPU hours and may not be wanted; the condition says how), True while
/// both are unchanged. Nothing for a Model without references, or a Job that recorded
/// none (created before they were recorded).
fn up_to_date(
    job: &ObservedJob,
    base_model: &Option<RefState>,
    dataset: &Option<RefState>,
) -> Option<Desired> {
    let mut changed = Vec::new();
    let mut compared = false;
    for (subdir, reference, reason, what) in [
        (
            "model",
            base_model,
            reasons::BASE_MODEL_CHANGED,
            "base Model (spec.model)",
        ),
        (
            "data",
            dataset,
            reasons::DATASET_CHANGED,
            "Dataset (spec.dataset)",
        ),
    ] {
        let (Some(RefState::Ready { generation, .. }), Some(ran_on)) =
            (reference, job.inputs.get(subdir))
        else {
            continue;
        };
        compared = true;
        if generation != ran_on {
            changed.push((
                reason,
                format!("the {what} ran again (generation {generation}) after this run used its generation {ran_on}'s artifacts"),
            ));
        }
    }
    if !compared {
        return None;
    }
    Some(match changed.first() {
        None => Desired::new(
            types::UP_TO_DATE,
            true,
            reasons::INPUTS_UNCHANGED,
            "made from the current artifacts of its inputs",
        ),
        Some((reason, _)) => {
            let what: Vec<_> = changed.iter().map(|(_, m)| m.as_str()).collect();
            Desired::new(
                types::UP_TO_DATE,
                false,
                reason,
                format!(
                    "{}; this Model's artifacts are kept and still served; to run it again on the new ones, change its spec (any field, e.g. a param)",
                    what.join("; ")
                ),
            )
        }
    })
}

fn complete(status: bool, reason: &'static str, message: impl Into<String>) -> Vec<Desired> {
    super::with_ready(types::COMPLETE, status, reason, message)
}

/// Plans a Model or Dataset.
pub fn plan(input: &BatchInput<'_>, cloud: &dyn Cloud) -> BatchPlan {
    let parent = &input.parent;
    let generation = parent.generation;
    let prefix = artifact_prefix(parent, cloud);
    let mut plan = Plan::new(BatchExtra {
        artifacts_url: prefix.url.to_string(),
    });
    if let Some(why) = foreign_location(input.artifacts_url, &prefix) {
        // Kept as recorded, so that what was there is not lost; no child, no Job.
        plan.extra.artifacts_url = input.artifacts_url.unwrap_or_default().to_owned();
        plan.conditions = complete(false, reasons::FOREIGN_ARTIFACTS_URL, why);
        return plan;
    }

    let Some(image) = input.spec.image else {
        plan.conditions = complete(
            false,
            reasons::AWAITING_IMAGE,
            "waiting for the image build of spec.build",
        );
        return plan;
    };
    plan.children.push(Child::ConfigMap(params_config_map(
        parent,
        input.spec.params,
    )));
    plan.children
        .extend(owned_prefix_objects(parent, &prefix, cloud));
    let job_name = parent.kind.workload_name(&parent.name);
    let what = if parent.kind == Kind::Dataset {
        "data loader"
    } else {
        "modeller"
    };

    match &input.job {
        Some(job) if job.deleting => {
            plan.conditions = complete(
                false,
                reasons::JOB_NOT_COMPLETE,
                format!("waiting for Job {job_name} of an earlier generation to be deleted"),
            );
            plan.next_look = Some(SOON);
        }
        Some(job) if job.generation != generation => {
            plan.replace(Deletable::Job, job_name.clone());
            plan.conditions = complete(
                false,
                reasons::JOB_NOT_COMPLETE,
                format!(
                    "spec changed (generation {}): re-running, replacing Job {job_name}",
                    generation.unwrap_or(0)
                ),
            );
        }
        Some(job) => match &job.outcome {
            JobOutcome::Complete => {
                plan.ready = true;
                plan.conditions = complete(
                    true,
                    reasons::JOB_COMPLETE,
                    format!("Job {job_name} completed"),
                );
                plan.conditions
                    .extend(up_to_date(job, &input.base_model, &input.dataset));
            }
            JobOutcome::Failed { message } => {
                plan.conditions = complete(
                    false,
                    reasons::JOB_FAILED,
                    format!("{message}; change the spec or delete the Job to retry"),
                );
            }
            JobOutcome::Running => {
                plan.conditions = match pod_problem(input.pods) {
                    Some(b) => complete(false, b.reason, b.message),
                    None => complete(
                        false,
                        reasons::JOB_NOT_COMPLETE,
                        format!("Waiting for {what} Job {job_name} to complete"),
                    ),
                };
            }
        },
        None if is_true_for(input.conditions, types::COMPLETE, generation) => {
            plan.ready = true;
            plan.conditions = complete(
                true,
                reasons::JOB_COMPLETE,
                format!("Job {job_name} completed"),
            );
        }
        None => {
            if let Some(b) = reference_blocked(&input.base_model, &input.dataset) {
                plan.conditions = complete(false, b.reason, b.message);
                return plan;
            }
            let mounts =
                super::content_mounts(prefix.artifacts(), &input.dataset, &input.base_model);
            let workload = Workload {
                parent,
                image,
                command: input.spec.command,
                env: input.spec.env,
                extra_env: Vec::new(),
                resources: input.spec.resources,
                mounts,
                port: None,
                restart_policy: "Never",
            };
            match pod_template(&workload, cloud) {
                Ok(template) => {
                    let mut meta = parent.child_meta(job_name.clone());
                    let mut annotations = BTreeMap::from([(
                        GENERATION_ANNOTATION.to_owned(),
                        generation.unwrap_or(0).to_string(),
                    )]);
                    for (subdir, reference) in
                        [("model", &input.base_model), ("data", &input.dataset)]
                    {
                        if let Some(RefState::Ready { generation, .. }) = reference {
                            annotations.insert(
                                input_generation_annotation(subdir),
                                generation.to_string(),
                            );
                        }
                    }
                    meta.annotations = Some(annotations);
                    let job = Job {
                        metadata: meta,
                        spec: Some(JobSpec {
                            backoff_limit: Some(if parent.kind == Kind::Dataset { 2 } else { 0 }),
                            template,
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    plan.start(
                        parent.kind.run_role(),
                        Child::Job(stamp_hash(|j: &mut Job| &mut j.metadata, job)),
                    );
                    plan.conditions = complete(
                        false,
                        reasons::JOB_NOT_COMPLETE,
                        format!("Waiting for {what} Job {job_name} to complete"),
                    );
                }
                Err(b) => plan.conditions = complete(false, b.reason, b.message),
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use crate::plan::Deletion;
    use k8s_openapi::api::core::v1::PodSpec;

    /// The pod spec of the Job a plan creates.
    fn job_pod(p: &BatchPlan) -> PodSpec {
        let job = p.job().expect("a Job");
        let template = &job.spec.as_ref().expect("a Job spec").template;
        template.spec.clone().expect("a pod spec")
    }
    use super::*;
    use crate::fake::{FAKE_GPU_LABEL, FakeCloud};
    use crate::names;
    use substratus_crds::{GpuResources, GpuType};

    fn parent(kind: Kind, generation: i64) -> Parent {
        Parent {
            kind,
            name: "m".into(),
            namespace: "ns".into(),
            uid: "uid-1".into(),
            generation: Some(generation),
        }
    }

    struct Fixture {
        command: Vec<String>,
        env: BTreeMap<String, String>,
        params: Params,
        resources: Option<Resources>,
    }

    fn fixture() -> Fixture {
        Fixture {
            command: vec!["load.sh".into()],
            env: BTreeMap::from([
                ("B".into(), "2".into()),
                ("A".into(), "${{ secrets.s.k }}".into()),
            ]),
            params: Params::new(),
            resources: None,
        }
    }

    fn input<'a>(f: &'a Fixture, kind: Kind, generation: i64) -> BatchInput<'a> {
        BatchInput {
            parent: parent(kind, generation),
            spec: BatchSpec {
                image: Some("img"),
                command: &f.command,
                env: &f.env,
                params: &f.params,
                resources: f.resources.as_ref(),
            },
            conditions: &[],
            artifacts_url: None,
            base_model: None,
            dataset: None,
            job: None,
            pods: &[],
        }
    }

    fn reason(plan: &BatchPlan) -> (&'static str, bool) {
        let c = plan
            .conditions
            .iter()
            .find(|c| c.type_ == types::COMPLETE)
            .unwrap();
        (c.reason, c.status)
    }

    #[test]
    fn a_new_dataset_gets_its_job_with_the_contract() {
        let f = fixture();
        let cloud = FakeCloud::default();
        let plan = plan(&input(&f, Kind::Dataset, 1), &cloud);
        let job = plan.job().cloned().expect("a Job");
        assert_eq!(job.metadata.name.as_deref(), Some("m-data-loader"));
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()[GENERATION_ANNOTATION],
            "1"
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        let tpl = spec.template;
        let meta = tpl.metadata.unwrap();
        assert_eq!(meta.labels.as_ref().unwrap()["dataset"], "m");
        assert_eq!(meta.labels.as_ref().unwrap()["role"], "run");
        assert_eq!(
            meta.annotations.unwrap()["kubectl.kubernetes.io/default-container"],
            "load"
        );
        let pod = tpl.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("data-loader"));
        let c = &pod.containers[0];
        assert_eq!(c.name, "load");
        let env: Vec<_> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(env, ["A", "B"]);
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("/content/params.json", Some(true)),
                ("/content/artifacts", Some(false))
            ]
        );
        // No resources: the cloud's defaults.
        let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(req["memory"].0, "4Gi");
        assert_eq!(req["ephemeral-storage"].0, "100Gi");
        assert_eq!(reason(&plan), (reasons::JOB_NOT_COMPLETE, false));
        assert_eq!(
            plan.extra.artifacts_url,
            format!(
                "fake://artifacts/{}",
                names::storage_prefix("test-cluster", "ns", Kind::Dataset, "m")
            )
        );
        let Child::ConfigMap(cm) = &plan.children[0] else {
            panic!("params ConfigMap first")
        };
        assert_eq!(cm.metadata.name.as_deref(), Some("m-dataset-params"));
        assert_eq!(cm.data.as_ref().unwrap()["params.json"], "{}");
    }

    #[test]
    fn a_completed_model_tells_when_its_base_or_dataset_ran_again() {
        let f = fixture();
        let cloud = FakeCloud::default();
        let mut i = input(&f, Kind::Model, 1);
        let ready = |g| {
            Some(RefState::Ready {
                artifacts: crate::plan::fixtures::folder("fake://artifacts/base/artifacts"),
                generation: g,
            })
        };
        i.base_model = ready(2);
        i.dataset = ready(1);
        // The Job records which runs of its inputs it was given.
        let job = plan(&i, &cloud).job().cloned().unwrap();
        let a = job.metadata.annotations.as_ref().unwrap();
        assert_eq!(a["substratus.ai/model-generation"], "2");
        assert_eq!(a["substratus.ai/data-generation"], "1");
        let mut done = ObservedJob::from_job(&job);
        done.outcome = JobOutcome::Complete;
        assert_eq!(done.inputs["model"], 2);
        i.job = Some(done);
        let up_to_date = |p: &BatchPlan| {
            p.conditions
                .iter()
                .find(|c| c.type_ == types::UP_TO_DATE)
                .map(|c| (c.status, c.reason, c.message.clone()))
        };
        let p = plan(&i, &cloud);
        assert!(p.ready);
        assert_eq!(up_to_date(&p).unwrap().1, reasons::INPUTS_UNCHANGED);
        // The base Model ran again: still Ready (its artifacts are kept), not up to date.
        i.base_model = ready(3);
        let p = plan(&i, &cloud);
        assert!(p.ready && p.job().is_none() && p.delete.is_empty());
        let (status, reason, message) = up_to_date(&p).unwrap();
        assert_eq!((status, reason), (false, reasons::BASE_MODEL_CHANGED));
        assert!(
            message.contains("generation 3") && message.contains("change its spec"),
            "{message}"
        );
        // And the Dataset too: both named, the base first.
        i.dataset = ready(5);
        let (_, reason, message) = up_to_date(&plan(&i, &cloud)).unwrap();
        assert_eq!(reason, reasons::BASE_MODEL_CHANGED);
        assert!(
            message.contains("Dataset (spec.dataset) ran again (generation 5)"),
            "{message}"
        );
        // No references, or a Job that recorded none: no condition.
        i.base_model = None;
        i.dataset = None;
        assert_eq!(up_to_date(&plan(&i, &cloud)), None);
    }

    #[test]
    fn a_model_waits_for_its_references_then_mounts_them_read_only() {
        let f = fixture();
        let cloud = FakeCloud::default();
        let mut i = input(&f, Kind::Model, 1);
        i.base_model = Some(RefState::NotFound);
        i.dataset = Some(RefState::NotReady);
        let p = plan(&i, &cloud);
        assert!(p.job().is_none());
        assert_eq!(reason(&p), (reasons::BASE_MODEL_NOT_FOUND, false));
        i.base_model = Some(RefState::Ready {
            artifacts: crate::plan::fixtures::folder("fake://artifacts/base/artifacts"),
            generation: 1,
        });
        assert_eq!(
            reason(&plan(&i, &cloud)),
            (reasons::DATASET_NOT_READY, false)
        );
        i.dataset = Some(RefState::Ready {
            artifacts: crate::plan::fixtures::folder("fake://artifacts/data/artifacts"),
            generation: 1,
        });
        let p = plan(&i, &cloud);
        let pod = job_pod(&p);
        let mounts: Vec<_> = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.clone(), m.read_only))
            .collect();
        assert!(mounts.contains(&("/content/data".into(), Some(true))));
        assert!(mounts.contains(&("/content/model".into(), Some(true))));
        assert!(mounts.contains(&("/content/artifacts".into(), Some(false))));
    }

    #[test]
    fn job_outcomes_map_to_conditions() {
        let f = fixture();
        let cloud = FakeCloud::default();
        let mut i = input(&f, Kind::Model, 3);
        i.job = Some(ObservedJob {
            inputs: Default::default(),
            generation: Some(3),
            outcome: JobOutcome::Complete,
            deleting: false,
        });
        let p = plan(&i, &cloud);
        assert!(p.ready && p.job().is_none());
        assert_eq!(reason(&p), (reasons::JOB_COMPLETE, true));
        i.job = Some(ObservedJob {
            inputs: Default::default(),
            generation: Some(3),
            outcome: JobOutcome::Failed {
                message: "Job m-modeller failed: BackoffLimitExceeded".into(),
            },
            deleting: false,
        });
        let p = plan(&i, &cloud);
        assert!(!p.ready);
        let c = &p.conditions[0];
        assert_eq!((c.reason, c.status), (reasons::JOB_FAILED, false));
        assert!(c.message.contains("BackoffLimitExceeded"), "{}", c.message);
        assert!(
            p.job().is_none(),
            "a failed Job is not retried for the same generation"
        );
    }

    #[test]
    fn a_new_generation_replaces_the_job_of_the_old_one() {
        let f = fixture();
        let cloud = FakeCloud::default();
        let mut i = input(&f, Kind::Model, 4);
        i.job = Some(ObservedJob {
            inputs: Default::default(),
            generation: Some(3),
            outcome: JobOutcome::Complete,
            deleting: false,
        });
        let p = plan(&i, &cloud);
        assert_eq!(
            p.delete,
            vec![Deletion {
                kind: Deletable::Job,
                name: "m-modeller".into()
            }]
        );
        assert!(!p.ready && p.next_look.is_some() && p.job().is_none());
        i.job = None;
        let p = plan(&i, &cloud);
        assert_eq!(
            p.job().cloned().unwrap().metadata.annotations.unwrap()[GENERATION_ANNOTATION],
            "4"
        );
    }

    #[test]
    fn a_completed_generation_is_not_rerun_when_its_job_is_gone() {
        let f = fixture();
        let cloud = FakeCloud::default();
        let done = crate::conditions::merge(
            &[],
            &complete(true, reasons::JOB_COMPLETE, ""),
            Some(2),
            &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let mut i = input(&f, Kind::Dataset, 2);
        i.conditions = &done;
        let p = plan(&i, &cloud);
        assert!(p.ready && p.job().is_none());
    }

    #[test]
    fn gpus_are_placed_by_the_cloud_and_unsupported_types_block_with_a_reason() {
        let mut f = fixture();
        f.resources = Some(Resources {
            gpu: Some(GpuResources {
                gpu_type: Some(GpuType::NvidiaL4),
                count: Some(4),
            }),
            ..Default::default()
        });
        let cloud = FakeCloud::default();
        let p = plan(&input(&f, Kind::Model, 1), &cloud);
        let pod = job_pod(&p);
        assert_eq!(pod.node_selector.unwrap()[FAKE_GPU_LABEL], "l4");
        let r = pod.containers[0].resources.clone().unwrap();
        assert_eq!(r.limits.unwrap()["nvidia.com/gpu"].0, "4");
        assert_eq!(r.requests.unwrap()["nvidia.com/gpu"].0, "4");

        f.resources = Some(Resources {
            gpu: Some(GpuResources {
                gpu_type: Some(GpuType::NvidiaH100),
                count: Some(1),
            }),
            ..Default::default()
        });
        let p = plan(&input(&f, Kind::Model, 1), &cloud);
        assert!(p.job().is_none());
        let c = &p.conditions[0];
        assert_eq!((c.reason, c.status), (reasons::GPU_TYPE_UNAVAILABLE, false));
        assert!(c.message.contains("nvidia-h100"), "{}", c.message);
    }

    #[test]
    fn without_an_image_the_object_waits_for_its_build() {
        let f = fixture();
        let mut i = input(&f, Kind::Model, 1);
        i.spec.image = None;
        let p = plan(&i, &FakeCloud::default());
        assert!(p.children.is_empty() && p.job().is_none());
        assert_eq!(reason(&p), (reasons::AWAITING_IMAGE, false));
    }

    #[test]
    fn its_own_recorded_location_is_accepted() {
        let f = fixture();
        let cloud = FakeCloud::default();
        let own = plan(&input(&f, Kind::Model, 1), &cloud).extra.artifacts_url;
        for recorded in [own.clone(), format!("{own}/")] {
            let mut i = input(&f, Kind::Model, 1);
            i.artifacts_url = Some(&recorded);
            let p = plan(&i, &cloud);
            assert_eq!(p.extra.artifacts_url, own);
            assert!(p.job().is_some(), "{recorded}");
        }
    }

    #[test]
    fn a_recorded_location_not_its_own_is_a_condition_never_a_mount() {
        let f = fixture();
        let cloud = FakeCloud::default();
        let own = plan(&input(&f, Kind::Model, 1), &cloud).extra.artifacts_url;
        let bucket = own.rsplit_once('/').unwrap().0.to_owned();
        for forged in [
            // Another object's prefix, the bucket's root, a path below its own, another
            // bucket, mount options through a comma, and what does not parse.
            format!("{bucket}/0123456789abcdef0123456789abcdef"),
            bucket.clone(),
            format!("{own}/artifacts"),
            "fake://old-bucket/abc".to_owned(),
            format!("{own},implicit-dirs,uid=0"),
            "not a url".to_owned(),
        ] {
            let mut i = input(&f, Kind::Model, 1);
            i.artifacts_url = Some(&forged);
            let p = plan(&i, &cloud);
            assert!(
                p.children.is_empty() && p.create.is_empty() && p.job().is_none(),
                "{forged}: {p:?}"
            );
            assert_eq!(
                reason(&p),
                (reasons::FOREIGN_ARTIFACTS_URL, false),
                "{forged}"
            );
            assert_eq!(p.extra.artifacts_url, forged, "the recorded value is kept");
            let c = p
                .conditions
                .iter()
                .find(|c| c.type_ == types::COMPLETE)
                .unwrap();
            assert!(
                c.message.contains(&own) && c.message.contains("remove"),
                "{}",
                c.message
            );
        }
    }

    #[test]
    fn the_plan_is_deterministic() {
        let f = fixture();
        let cloud = FakeCloud::default();
        assert_eq!(
            plan(&input(&f, Kind::Model, 1), &cloud),
            plan(&input(&f, Kind::Model, 1), &cloud)
        );
    }
}
