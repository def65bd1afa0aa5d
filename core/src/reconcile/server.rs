//! Server reconciler.

use std::sync::Arc;

use kube::runtime::controller::Action;
use substratus_crds::{Server, ServerStatus};

use super::{Context, Error, merged_conditions, next_look, parent_of, write_status};
use crate::names::{Kind, KindChildren};
use crate::plan::server::{self, ObservedDeployment, ServerInput};
use crate::plan::{Child, RefState};

/// Reconciles a Server.
pub async fn reconcile_server(srv: Arc<Server>, ctx: Arc<Context>) -> Result<Action, Error> {
    let parent = parent_of(srv.as_ref(), Kind::Server)?;
    let model = match srv.spec.model_name() {
        Some(name) => ctx.reference(&parent.namespace, Kind::Model, name)?,
        None => RefState::NotFound,
    };
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
    let mut parent = parent;
    let built = super::build::reconcile_build(
        &ctx,
        srv.as_ref(),
        &mut parent,
        srv.spec.image.as_deref(),
        srv.spec.build.as_deref(),
        status.and_then(|s| s.build_upload.as_deref()),
        None,
    )
    .await?;
    let mut spec = srv.spec.clone();
    spec.image = built.image.clone();
    let input = ServerInput {
        parent: parent.clone(),
        spec: &spec,
        model,
        deployment: observed,
        pods: &pods,
    };
    let plan = server::plan(&input, ctx.cloud.as_ref());
    if plan
        .children
        .iter()
        .any(|c| matches!(c, Child::Deployment(_)))
    {
        ctx.ensure_service_account(&parent.namespace, Kind::Server.run_role())
            .await?;
    }
    ctx.apply_children(&parent.namespace, &plan.children)
        .await?;
    let existing = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut desired = plan.conditions.clone();
    built.explain_ready(&mut desired);
    desired.extend(built.conditions.iter().cloned());
    let new = ServerStatus {
        ready: plan.ready,
        conditions: merged_conditions(existing, &desired, parent.generation),
        build_upload: built.upload.clone().map(Box::new),
        replicas: Some(plan.ready_replicas),
        observed_generation: parent.generation,
    };
    if write_status(&ctx, srv.as_ref(), status, &new).await? {
        ctx.event_on_transition(srv.as_ref(), existing, &new.conditions);
    }
    Ok(next_look(built.sooner(None)))
}
