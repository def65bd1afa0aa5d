//! Server reconciler.

use std::sync::Arc;

use kube::runtime::controller::Action;
use substratus_crds::Server;

use super::pipeline::{apply, finish};
use super::{Context, Error, parent_of};
use crate::names::{Kind, KindChildren};
use crate::plan::Parent;
use crate::plan::RefState;
use crate::plan::server::{self, AdapterInput, ObservedDeployment, ServerInput};

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
    let input = ServerInput {
        parent: parent.clone(),
        spec: &spec,
        model,
        adapters,
        deployment: observed,
        pods: &pods,
    };
    let plan = server::plan(&input, ctx.cloud.as_ref());
    apply(&ctx, &parent.namespace, &plan).await?;
    finish(&ctx, srv.as_ref(), status, parent.generation, &plan, built).await
}
