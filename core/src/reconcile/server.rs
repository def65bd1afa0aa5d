//! Server reconciler.

use std::sync::Arc;

use kube::runtime::controller::Action;
use substratus_crds::Server;

use super::pipeline::{apply, finish};
use super::{Context, Error, parent_of};
use crate::names::{Kind, KindChildren};
use crate::plan::Parent;
use crate::plan::RefState;
use crate::plan::server::{self, AdapterInput, ObservedDeployment, ServerInput, ServerPlan};

/// Reconciles a Server.
pub async fn reconcile_server(srv: Arc<Server>, ctx: Arc<Context>) -> Result<Action, Error> {
    let parent = parent_of(srv.as_ref(), Kind::Server)?;
    let model = match srv.spec.model_name() {
        Some(name) => ctx.reference(&parent.namespace, Kind::Model, name)?,
        None => RefState::NotFound,
    };
    let adapters = srv
        .spec
        .adapters
        .iter()
        .map(|a| {
            Ok(AdapterInput {
                name: a.name.clone(),
                model: a.model.name.clone(),
                state: ctx.reference(&parent.namespace, Kind::Model, &a.model.name)?,
                base: ctx.base_of(&parent.namespace, &a.model.name),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let name = Kind::Server.workload_name(&parent.name);
    let deployment = ctx.caches().deployment(&parent.namespace, &name);
    let observed = deployment.as_ref().map(|d| ObservedDeployment {
        ready_replicas: d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    });
    let not_ready = observed.as_ref().is_none_or(|d| d.ready_replicas == 0);
    let pods = if deployment.is_some() && not_ready {
        ctx.workload_pods(&parent.namespace, Kind::Server, &parent.name)
            .await?
    } else {
        Vec::new()
    };
    let fresh = ctx.fresh_status(srv.as_ref(), srv.status.clone());
    let status = fresh.as_ref();
    let built = super::build::reconcile_build(
        &ctx,
        srv.as_ref(),
        &parent,
        srv.spec.image.as_deref(),
        srv.spec.build.as_deref(),
        status.and_then(|s| s.build_upload.as_deref()),
    )
    .await?;
    let parent = Parent {
        generation: built.generation(&parent),
        ..parent
    };
    let mut spec = srv.spec.clone();
    spec.image = built.image.clone();
    let copied = status.map(|s| s.adapters.as_slice()).unwrap_or_default();
    let input = ServerInput {
        parent: parent.clone(),
        spec: &spec,
        model,
        adapters,
        deployment: observed,
        pods: &pods,
        copied,
    };
    let mut plan = server::plan(&input, ctx.cloud.as_ref());
    // Copies first: a replica the Deployment starts finds every adapter copied so far.
    copy_adapters(&ctx, &parent, &mut plan).await?;
    apply(&ctx, &parent.namespace, &plan).await?;
    finish(&ctx, srv.as_ref(), status, parent.generation, &plan, built).await
}

/// How long copying one adapter may take before it counts as a transient failure (tried
/// again with backoff). Copies are server-side: the bytes do not pass through the operator.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Makes the plan's adapter copies, each recorded in `status.adapters` once whole, so that
/// the gateway loads only complete copies. A failure is retried with backoff: a copy made
/// again over itself writes the same objects.
async fn copy_adapters(ctx: &Context, parent: &Parent, plan: &mut ServerPlan) -> Result<(), Error> {
    for copy in std::mem::take(&mut plan.extra.copies) {
        let object = format!(
            "Server {}/{} adapter {}",
            parent.namespace, parent.name, copy.status.name
        );
        let copied = crate::cloud::within(
            &format!("copying {} to {}", copy.from, copy.to),
            COPY_TIMEOUT,
            ctx.cloud.copy_folder(&copy.from, &copy.to),
        )
        .await;
        match copied {
            Ok(objects) => {
                tracing::info!(%object, objects, from = %copy.from, to = %copy.to, "adapter copied");
                plan.extra.adapters.push(copy.status);
            }
            Err(source) => {
                return Err(Error::Cloud {
                    step: "copying the adapter of",
                    object,
                    source,
                });
            }
        }
    }
    Ok(())
}
