//! The one tail every reconcile ends with: [`apply`] carries out a [`Plan`] (deletions, the
//! ServiceAccount, applies, creates) and [`finish`] turns it and the build step's outcome
//! into the object's status, writes it when it changed, publishes an Event on a transition
//! and says when to look again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use serde::Serialize;
use serde::de::DeserializeOwned;
use substratus_crds::UploadStatus;
use substratus_crds::{ArtifactObjectStatus, ArtifactsStatus, NotebookStatus, ServerStatus};

use super::build::BuildOutcome;
use super::{Context, Error, merged_conditions, next_look, write_status};
use crate::plan::Plan;
use crate::plan::batch::BatchExtra;
use crate::plan::notebook::NotebookExtra;
use crate::plan::server::ServerExtra;

/// Carries out `plan` in `namespace`: deletions first, then the ServiceAccount the workload
/// runs as, the children to apply (at once) and the children to create.
pub async fn apply<X>(ctx: &Context, namespace: &str, plan: &Plan<X>) -> Result<(), Error> {
    for d in &plan.delete {
        ctx.delete_child(namespace, d).await?;
    }
    if let Some(role) = plan.account {
        ctx.ensure_service_account(namespace, role).await?;
    }
    ctx.apply_children(namespace, &plan.children).await?;
    for child in &plan.create {
        ctx.create_child(namespace, child).await?;
    }
    Ok(())
}

/// A kind's status as built from its plan: the shared fields and the kind's extra.
pub trait KindStatus: Serialize + DeserializeOwned + PartialEq + Clone {
    /// What the kind's plan adds to its status.
    type Extra;
    fn conditions(&self) -> &[Condition];
    /// The status a plan leads to.
    fn from_plan(
        plan: &Plan<Self::Extra>,
        conditions: Vec<Condition>,
        upload: Option<UploadStatus>,
        generation: Option<i64>,
    ) -> Self;
}

impl KindStatus for ArtifactObjectStatus {
    type Extra = BatchExtra;
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn from_plan(
        plan: &Plan<BatchExtra>,
        conditions: Vec<Condition>,
        upload: Option<UploadStatus>,
        generation: Option<i64>,
    ) -> Self {
        ArtifactObjectStatus {
            ready: plan.ready,
            conditions,
            artifacts: Some(ArtifactsStatus {
                url: Some(plan.extra.artifacts_url.clone()),
            }),
            build_upload: upload.map(Box::new),
            observed_generation: generation,
        }
    }
}

impl KindStatus for ServerStatus {
    type Extra = ServerExtra;
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn from_plan(
        plan: &Plan<ServerExtra>,
        conditions: Vec<Condition>,
        upload: Option<UploadStatus>,
        generation: Option<i64>,
    ) -> Self {
        ServerStatus {
            ready: plan.ready,
            conditions,
            build_upload: upload.map(Box::new),
            replicas: Some(plan.extra.ready_replicas),
            selector: Some(plan.extra.selector.clone()),
            adapters: plan.extra.adapters.clone(),
            observed_generation: generation,
        }
    }
}

impl KindStatus for NotebookStatus {
    type Extra = NotebookExtra;
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn from_plan(
        plan: &Plan<NotebookExtra>,
        conditions: Vec<Condition>,
        upload: Option<UploadStatus>,
        generation: Option<i64>,
    ) -> Self {
        NotebookStatus {
            ready: plan.ready,
            conditions,
            artifacts: Some(ArtifactsStatus {
                url: Some(plan.extra.artifacts_url.clone()),
            }),
            build_upload: upload.map(Box::new),
            token_secret: Some(plan.extra.token_secret.clone()),
            observed_generation: generation,
        }
    }
}

/// Writes the status `plan` and the build step lead to (when it differs from `current`),
/// publishes an Event when `Ready` changed, and returns when to look again: the sooner of
/// the plan's and the build's next look, else on a change.
pub async fn finish<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    generation: Option<i64>,
    plan: &Plan<S::Extra>,
    built: BuildOutcome,
) -> Result<Action, Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: KindStatus,
{
    let existing = current.map(|s| s.conditions()).unwrap_or_default();
    let mut desired = plan.conditions.clone();
    built.explain_ready(&mut desired);
    let requeue = built.sooner(plan.next_look);
    desired.extend(built.conditions);
    let conditions = merged_conditions(existing, &desired, generation);
    let new = S::from_plan(plan, conditions, built.upload, generation);
    if write_status(ctx, obj, current, &new).await? {
        ctx.event_on_transition(obj, existing, new.conditions());
    }
    Ok(next_look(requeue))
}
