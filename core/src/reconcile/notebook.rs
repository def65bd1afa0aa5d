//! Notebook reconciler.

use std::sync::Arc;

use kube::runtime::controller::Action;
use substratus_crds::Notebook;

use super::pipeline::{apply, finish};
use super::{Context, Error, parent_of};
use crate::names::{self, Kind, KindChildren};
use crate::plan::Parent;
use crate::plan::notebook::{self, NotebookInput, ObservedPod};
use crate::plan::storage::{artifact_prefix, foreign_location};

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
    let pod_name = Kind::Notebook.workload_name(&parent.name);
    let pod = ctx.caches().pod(&ns, &pod_name);
    // Used only with a new Pod; a token Secret that exists already is kept.
    let token = if pod.is_some() {
        String::new()
    } else {
        new_token()?
    };
    let fresh = ctx.fresh_status(nb.as_ref(), nb.status.clone());
    let status = fresh.as_ref();
    let artifacts_url = status
        .and_then(|s| s.artifacts.as_ref())
        .and_then(|a| a.url.as_deref());
    // A location not its own builds nothing: the planner says why.
    let foreign = foreign_location(artifacts_url, &artifact_prefix(&parent, ctx.cloud.as_ref()));
    let built = super::build::reconcile_build(
        &ctx,
        nb.as_ref(),
        &parent,
        nb.spec.image.as_deref(),
        nb.spec.build.as_deref().filter(|_| foreign.is_none()),
        status.and_then(|s| s.build_upload.as_deref()),
    )
    .await?;
    let parent = Parent {
        generation: built.generation(&parent),
        ..parent
    };
    let mut spec = nb.spec.clone();
    spec.image = built.image.clone();
    let input = NotebookInput {
        parent: parent.clone(),
        spec: &spec,
        artifacts_url,
        model,
        dataset,
        new_token: &token,
        pod: pod.as_ref().map(ObservedPod::from_pod),
        pods: pod.as_slice(),
    };
    let plan = notebook::plan(&input, ctx.cloud.as_ref());
    apply(&ctx, &ns, &plan).await?;
    finish(&ctx, nb.as_ref(), status, parent.generation, &plan, built).await
}
