//! Notebook reconciler.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use substratus_crds::{ArtifactsStatus, Notebook, NotebookStatus};

use super::{Context, Error, kube_err, merged_conditions, next_look, parent_of, write_status};
use crate::names::{self, Kind, KindChildren};
use crate::plan::Child;
use crate::plan::notebook::{self, NotebookInput, ObservedPod};

/// A random token for Jupyter: 32 hex characters from the OS's generator.
fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Invalid(format!("no randomness for the notebook token: {e}")))?;
    Ok(names::hex(&bytes))
}

/// Reconciles a Notebook.
pub async fn reconcile_notebook(nb: Arc<Notebook>, ctx: Arc<Context>) -> Result<Action, Error> {
    let parent = parent_of(nb.as_ref(), Kind::Notebook)?;
    let ns = parent.namespace.clone();
    let model = match nb.spec.model_name() {
        Some(name) => Some(ctx.reference(&ns, Kind::Model, name)?),
        None => None,
    };
    let dataset = match &nb.spec.dataset {
        Some(r) => Some(ctx.reference(&ns, Kind::Dataset, &r.name)?),
        None => None,
    };
    let secret_name = names::notebook_token_secret(&parent.name);
    let pod_name = Kind::Notebook.workload_name(&parent.name);
    // Secrets are not cached (that would need the right to list every Secret): one read.
    let secret_exists = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_metadata_opt(&secret_name)
        .await
        .map_err(kube_err("reading Secret", format!("{ns}/{secret_name}")))?
        .is_some();
    let pod = ctx.caches().pod(&ns, &pod_name);
    let token = if secret_exists {
        String::new()
    } else {
        new_token()?
    };
    let fresh = ctx.fresh_status(nb.as_ref(), nb.status.clone());
    let status = fresh.as_ref();
    let artifacts_url = status
        .and_then(|s| s.artifacts.as_ref())
        .and_then(|a| a.url.as_deref());
    let mut parent = parent;
    let built = super::build::reconcile_build(
        &ctx,
        nb.as_ref(),
        &mut parent,
        nb.spec.image.as_deref(),
        nb.spec.build.as_deref(),
        status.and_then(|s| s.build_upload.as_deref()),
        artifacts_url,
    )
    .await?;
    let mut spec = nb.spec.clone();
    spec.image = built.image.clone();
    let input = NotebookInput {
        parent: parent.clone(),
        spec: &spec,
        artifacts_url,
        model,
        dataset,
        token_secret_exists: secret_exists,
        new_token: &token,
        pod: pod.as_ref().map(ObservedPod::from_pod),
        pods: pod.as_slice(),
    };
    let plan = notebook::plan(&input, ctx.cloud.as_ref());
    for d in &plan.delete {
        ctx.delete_child(&ns, d).await?;
    }
    ctx.apply_children(&ns, &plan.children).await?;
    for child in &plan.create {
        if matches!(child, Child::Pod(_)) {
            ctx.ensure_service_account(&ns, Kind::Notebook.run_role())
                .await?;
        }
        ctx.create_child(&ns, child).await?;
    }
    let existing = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut desired = plan.conditions.clone();
    built.explain_ready(&mut desired);
    desired.extend(built.conditions.iter().cloned());
    let new = NotebookStatus {
        ready: plan.ready,
        conditions: merged_conditions(existing, &desired, parent.generation),
        artifacts: Some(ArtifactsStatus {
            url: Some(plan.artifacts_url.clone()),
        }),
        build_upload: built.upload.clone().map(Box::new),
        token_secret: Some(plan.token_secret.clone()),
        observed_generation: parent.generation,
    };
    if write_status(&ctx, nb.as_ref(), status, &new).await? {
        ctx.event_on_transition(nb.as_ref(), existing, &new.conditions);
    }
    Ok(next_look(built.sooner(
        plan.requeue.then_some(std::time::Duration::from_secs(1)),
    )))
}
