//! Model and Dataset reconcilers: read references and the Job, plan, apply.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::Action;
use substratus_crds::{ArtifactObjectStatus, Dataset, Model};

use super::pipeline::{apply, finish};
use super::{Context, Error, parent_of};
use crate::names::{Kind, KindChildren};
use crate::plan::batch::{self, BatchInput, BatchSpec};
use crate::plan::job::{JobOutcome, ObservedJob};
use crate::plan::storage::{artifact_prefix, foreign_location};
use crate::plan::{Parent, RefState};

/// What a Model or Dataset reconcile needs to read first.
struct Observed {
    job: Option<Job>,
    pods: Vec<k8s_openapi::api::core::v1::Pod>,
}

async fn observe(ctx: &Context, parent: &Parent) -> Result<Observed, Error> {
    let job_name = parent.kind.workload_name(&parent.name);
    let job = ctx.caches().job(&parent.namespace, &job_name);
    // Pods explain a Job that waits (unschedulable, image pull) or failed; a Job whose pods
    // run needs no pod reads.
    let waiting = job.as_ref().is_some_and(|j| {
        let s = j.status.clone().unwrap_or_default();
        s.ready.unwrap_or(0) == 0 && s.succeeded.unwrap_or(0) == 0
    });
    let needs_pods = waiting
        && job.as_ref().is_some_and(|j| {
            let o = ObservedJob::from_job(j);
            matches!(o.outcome, JobOutcome::Running | JobOutcome::Failed { .. })
        });
    let pods = if needs_pods {
        ctx.workload_pods(&parent.namespace, parent.kind, &parent.name)
            .await?
    } else {
        Vec::new()
    };
    Ok(Observed { job, pods })
}

/// The message of a failed container of the Job's pods, to make `JobFailed` actionable.
fn failed_container_message(pods: &[k8s_openapi::api::core::v1::Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find_map(|cs| {
                let t = cs.state.as_ref()?.terminated.as_ref()?;
                (t.exit_code != 0).then(|| {
                    format!(
                        "container {} exited with {}",
                        cs.name,
                        crate::plan::exit_of(t)
                    )
                })
            })
    })
}

fn observed_job(o: &Observed) -> Option<ObservedJob> {
    o.job.as_ref().map(|j| {
        let mut observed = ObservedJob::from_job(j);
        if let JobOutcome::Failed { message } = &mut observed.outcome
            && let Some(detail) = failed_container_message(&o.pods)
        {
            message.push_str(&format!("; {detail}"));
        }
        observed
    })
}

/// Plans and applies a Model or Dataset whose references were already read; writes status
/// and publishes an Event on a transition.
async fn reconcile_batch<K, S>(
    parent: Parent,
    obj: &K,
    spec: &S,
    current: Option<&ArtifactObjectStatus>,
    ctx: &Context,
    observed: Observed,
    references: (Option<RefState>, Option<RefState>),
) -> Result<Action, Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: substratus_crds::WorkloadSpec,
{
    let fresh = ctx.fresh_status(obj, current.cloned());
    let status = fresh.as_ref();
    let artifacts_url = status
        .and_then(|s| s.artifacts.as_ref())
        .and_then(|a| a.url.as_deref());
    // A location not its own builds nothing: the planner says why.
    let foreign = foreign_location(artifacts_url, &artifact_prefix(&parent, ctx.cloud.as_ref()));
    let built = super::build::reconcile_build(
        ctx,
        obj,
        &parent,
        spec.image(),
        spec.build().filter(|_| foreign.is_none()),
        status.and_then(|s| s.build_upload.as_deref()),
    )
    .await?;
    let (base_model, dataset) = references;
    let parent = Parent {
        generation: built.generation(&parent),
        ..parent
    };
    let input = BatchInput {
        parent: parent.clone(),
        spec: BatchSpec {
            image: built.image.as_deref(),
            command: spec.command(),
            env: spec.env(),
            params: spec.params(),
            resources: spec.resources(),
        },
        conditions: status.map(|s| s.conditions.as_slice()).unwrap_or_default(),
        artifacts_url,
        base_model,
        dataset,
        job: observed_job(&observed),
        pods: &observed.pods,
    };
    let plan = batch::plan(&input, ctx.cloud.as_ref());
    apply(ctx, &parent.namespace, &plan).await?;
    finish(ctx, obj, status, parent.generation, &plan, built).await
}

/// Reconciles a Model.
pub async fn reconcile_model(model: Arc<Model>, ctx: Arc<Context>) -> Result<Action, Error> {
    let parent = parent_of(model.as_ref(), Kind::Model)?;
    let observed = observe(&ctx, &parent).await?;
    // References are read until the Job exists (to start it) and after (to tell whether
    // they ran again since): from the caches, at no cost.
    let mut references = (None, None);
    if observed.job.is_none() && model.spec.model.is_some() {
        let base_of = |name: &str| ctx.base_of(&parent.namespace, name);
        if let Some(cycle) = crate::plan::base_cycle(&parent.name, base_of) {
            return Err(Error::ReferenceCycle(cycle));
        }
    }
    if let Some(r) = &model.spec.model {
        references.0 = Some(ctx.reference(&parent.namespace, Kind::Model, &r.name)?);
    }
    if let Some(r) = &model.spec.dataset {
        references.1 = Some(ctx.reference(&parent.namespace, Kind::Dataset, &r.name)?);
    }
    reconcile_batch(
        parent,
        model.as_ref(),
        &model.spec,
        model.status.as_ref(),
        &ctx,
        observed,
        references,
    )
    .await
}

/// Reconciles a Dataset.
pub async fn reconcile_dataset(dataset: Arc<Dataset>, ctx: Arc<Context>) -> Result<Action, Error> {
    let parent = parent_of(dataset.as_ref(), Kind::Dataset)?;
    let observed = observe(&ctx, &parent).await?;
    reconcile_batch(
        parent,
        dataset.as_ref(),
        &dataset.spec,
        dataset.status.as_ref(),
        &ctx,
        observed,
        (None, None),
    )
    .await
}
