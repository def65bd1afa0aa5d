//! Status writes and what the reconcilers share about their objects: keys, owners, spec
//! hashes, merged conditions, when to look again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, Patch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::cloud::BucketUrl;
use crate::conditions::{self, Desired, types};
use crate::plan::{Parent, SPEC_HASH_ANNOTATION};

/// The generation whose run completed, from a Model's or Dataset's `Complete` condition
/// (0 when none did).
pub(crate) fn completed_generation(conditions: &[Condition]) -> i64 {
    conditions::find(conditions, types::COMPLETE)
        .filter(|c| c.status == "True")
        .and_then(|c| c.observed_generation)
        .unwrap_or(0)
}

pub(crate) fn status_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

pub(crate) fn hash_of(meta: &kube::api::ObjectMeta) -> Option<&String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
}

/// The parent of a plan, from an object.
pub fn parent_of<K: Resource<DynamicType = ()>>(
    obj: &K,
    kind: crate::names::Kind,
) -> Result<Parent, Error> {
    let meta = obj.meta();
    Ok(Parent {
        kind,
        name: meta
            .name
            .clone()
            .ok_or_else(|| Error::Invalid("object without a name".into()))?,
        namespace: meta
            .namespace
            .clone()
            .ok_or_else(|| Error::Invalid("object without a namespace".into()))?,
        uid: meta
            .uid
            .clone()
            .ok_or_else(|| Error::Invalid("object without a uid".into()))?,
        generation: meta.generation,
    })
}

/// Conditions merged with the current ones at `now`.
pub fn merged_conditions(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
) -> Vec<Condition> {
    let now = Time(jiff::Timestamp::now());
    conditions::merge(existing, desired, generation, &now)
}

/// Writes `status` with server-side apply, only when it differs from `current`.
pub async fn write_status<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let name = obj.meta().name.clone().unwrap_or_default();
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let written = api
        .patch_status(&name, &ctx.patch_params(), &Patch::Apply(&body))
        .await
        .map_err(kube_err(
            "writing status of",
            format!("{} {namespace}/{name}", K::kind(&())),
        ))?;
    if let (Some(rv), Ok(value)) = (
        written
            .meta()
            .resource_version
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok()),
        serde_json::to_value(status),
    ) {
        ctx.written.record(status_key(obj), rv, value);
    }
    ctx.metrics
        .status_writes
        .get_or_create(&crate::metrics::KindLabels {
            kind: K::kind(&()).into_owned(),
        })
        .inc();
    Ok(true)
}

/// How often storage is read for an upload that has not arrived: nothing in the cluster
/// tells of it.
pub const UPLOAD_POLL: Duration = Duration::from_secs(30);

/// What follows a reconcile: a look again after `soon` when the plan waits on something no
/// watch tells of (an old Job going away, an upload, a cloud call to retry); otherwise
/// nothing until a change. Every change a plan reads is watched (the object, its children,
/// their pods, its references), and the controllers' periodic resync looks at each object
/// again as a safety net, so no per-object timer is kept (at 10,000 objects those timers
/// were 7 MB of the operator's memory).
pub fn next_look(soon: Option<Duration>) -> kube::runtime::controller::Action {
    use kube::runtime::controller::Action;
    soon.map_or_else(Action::await_change, Action::requeue)
}

/// A Bucket URL from the recorded status, if it parses.
pub fn recorded_url(url: Option<&str>) -> Option<BucketUrl> {
    url.and_then(|u| BucketUrl::parse(u).ok())
}
