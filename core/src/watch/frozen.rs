//! Substratus objects as the caches hold them: metadata, what the wiring reads (what the
//! object names, whether its status shows a problem read from pods), and the rest (spec and
//! status) as compact JSON, parsed again only when a reconcile or a reference reads it.
//!
//! A typed Model is about 2 KB in memory (a 680-byte struct, each condition a 128-byte
//! struct of four strings, every string its own allocation); frozen, it is its metadata and
//! one string of about 600 bytes. At 10,000 Models that is most of the operator's heap. A
//! reconcile parses its object once (a few microseconds), which is nothing beside the
//! requests it makes.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::Resource;
use serde::{Deserialize, Deserializer};
use substratus_crds::{Dataset, Model, Notebook, Server};

use crate::conditions::{self, reasons, types};
use crate::names::Kind;

/// What the wiring needs to know of a kind: the kinds it refers to and how, and the
/// conditions of its status.
pub trait Wired:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    /// The kinds whose objects this kind refers to by name: a change of one re-triggers
    /// the objects that name it.
    const REFERS: &'static [Kind];
    /// The names of the objects of `kind` this object refers to.
    fn refers(&self, kind: Kind) -> Vec<&str>;
    /// Every object this object refers to, by kind and name.
    fn references(&self) -> Vec<(Kind, &str)> {
        Self::REFERS
            .iter()
            .flat_map(|kind| self.refers(*kind).into_iter().map(|name| (*kind, name)))
            .collect()
    }
    /// The conditions of its status.
    fn conditions(&self) -> &[Condition];
}

impl Wired for Model {
    const KIND: Kind = Kind::Model;
    const REFERS: &'static [Kind] = &[Kind::Model, Kind::Dataset];
    fn refers(&self, kind: Kind) -> Vec<&str> {
        let r = match kind {
            Kind::Model => &self.spec.model,
            Kind::Dataset => &self.spec.dataset,
            _ => return Vec::new(),
        };
        r.iter().map(|r| r.name.as_str()).collect()
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Wired for Dataset {
    const KIND: Kind = Kind::Dataset;
    const REFERS: &'static [Kind] = &[];
    fn refers(&self, _: Kind) -> Vec<&str> {
        Vec::new()
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Wired for Server {
    const KIND: Kind = Kind::Server;
    const REFERS: &'static [Kind] = &[Kind::Model];
    fn refers(&self, kind: Kind) -> Vec<&str> {
        match kind {
            Kind::Model => self
                .spec
                .model_name()
                .into_iter()
                .chain(self.spec.adapters.iter().map(|a| a.model.name.as_str()))
                .collect(),
            _ => Vec::new(),
        }
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Wired for Notebook {
    const KIND: Kind = Kind::Notebook;
    const REFERS: &'static [Kind] = &[Kind::Model, Kind::Dataset];
    fn refers(&self, kind: Kind) -> Vec<&str> {
        match kind {
            Kind::Model => self.spec.model_name().into_iter().collect(),
            Kind::Dataset => self.spec.dataset.iter().map(|r| r.name.as_str()).collect(),
            _ => Vec::new(),
        }
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

/// Whether the Ready condition of `conditions` was read from pods.
pub fn pod_problem_shown(conditions: &[Condition]) -> bool {
    conditions::find(conditions, types::READY)
        .is_some_and(|c| reasons::FROM_PODS.contains(&c.reason.as_str()))
}

/// An object of kind `K` held as its metadata, what the wiring reads, and the rest as JSON.
/// It deserializes from the API's JSON like `K` (so a watch of `Frozen<K>` fails on the
/// objects a watch of `K` fails on), and [`Frozen::thaw`] gives `K` back whole.
pub struct Frozen<K> {
    metadata: ObjectMeta,
    /// `K` without its metadata, as JSON.
    body: Box<str>,
    /// What the object names, by kind and name (see [`Wired::references`]).
    names: Box<[(Kind, Box<str>)]>,
    /// Whether its Ready condition was read from pods.
    pod_problem: bool,
    kind: PhantomData<fn() -> K>,
}

impl<K: Wired> Frozen<K> {
    /// `object`, frozen. The metadata stays whole: kube's watcher reads each event's
    /// `resourceVersion` from the object it decoded, and an object without one ends the
    /// watch in a full relist that drops the event (a deletion would never be told).
    pub fn freeze(mut object: K) -> Result<Frozen<K>, serde_json::Error> {
        let names = object
            .references()
            .into_iter()
            .map(|(kind, name)| (kind, name.into()))
            .collect();
        let pod_problem = pod_problem_shown(object.conditions());
        let metadata = std::mem::take(object.meta_mut());
        let body = serde_json::to_string(&object)?.into_boxed_str();
        Ok(Frozen {
            metadata,
            body,
            names,
            pod_problem,
            kind: PhantomData,
        })
    }

    /// The object, whole, with the metadata as the cache holds it.
    pub fn thaw(&self) -> Result<K, serde_json::Error> {
        let mut object: K = serde_json::from_str(&self.body)?;
        *object.meta_mut() = self.metadata.clone();
        Ok(object)
    }

    /// Every object this object refers to, by kind and name.
    pub fn references(&self) -> Vec<(Kind, &str)> {
        self.names.iter().map(|(k, n)| (*k, n.as_ref())).collect()
    }

    /// Whether its Ready condition was read from pods (a running pod may end that problem).
    pub fn pod_problem_shown(&self) -> bool {
        self.pod_problem
    }
}

impl<K> Clone for Frozen<K> {
    fn clone(&self) -> Self {
        Frozen {
            metadata: self.metadata.clone(),
            body: self.body.clone(),
            names: self.names.clone(),
            pod_problem: self.pod_problem,
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Frozen<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("metadata", &self.metadata)
            .field("body", &self.body)
            .finish()
    }
}

impl<'de, K: Wired> Deserialize<'de> for Frozen<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Frozen::freeze(K::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Frozen<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tuned() -> serde_json::Value {
        json!({
            "apiVersion": "substratus.ai/v1", "kind": "Model",
            "metadata": {"name": "tuned", "namespace": "ns", "uid": "u1", "generation": 3,
                "resourceVersion": "42", "labels": {"team": "a"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"image": "img", "model": {"name": "base"}, "dataset": {"name": "d"},
                "params": {"epochs": 3, "name": "x"}, "env": {"A": "b"},
                "build": {"git": {"url": "https://example.com/r.git"}},
                "resources": {"cpu": 2, "gpu": {"type": "nvidia-l4", "count": 1}}},
            "status": {"ready": false, "observedGeneration": 3,
                "artifacts": {"url": "s3://b/h/artifacts"},
                "conditions": [{"type": "Ready", "status": "False", "reason": "Unschedulable",
                    "message": "0/3 nodes", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        })
    }

    #[test]
    fn a_frozen_object_thaws_to_the_object_it_was() {
        let model: Model = serde_json::from_value(tuned()).unwrap();
        let frozen: Frozen<Model> = serde_json::from_value(tuned()).unwrap();
        assert_eq!(frozen.thaw().unwrap(), model);
        assert_eq!(frozen.meta(), &model.metadata);
        assert_eq!(
            (
                frozen.meta().resource_version.as_deref(),
                frozen.meta().uid.as_deref()
            ),
            (Some("42"), Some("u1")),
            "the watcher resumes from the resourceVersion of each event's object"
        );
        assert_eq!(
            Frozen::freeze(model.clone()).unwrap().thaw().unwrap(),
            model
        );
        // The metadata is held once, outside the body.
        assert!(!frozen.body.contains("managedFields"), "{}", frozen.body);
        assert!(!frozen.body.contains("\"uid\""), "{}", frozen.body);
    }

    #[test]
    fn the_wiring_reads_a_frozen_object_without_thawing_it() {
        let frozen: Frozen<Model> = serde_json::from_value(tuned()).unwrap();
        assert_eq!(
            frozen.references(),
            [(Kind::Model, "base"), (Kind::Dataset, "d")]
        );
        assert!(frozen.pod_problem_shown());
        let mut fine = tuned();
        fine["status"]["conditions"][0]["reason"] = json!("JobNotComplete");
        fine["spec"]["model"] = json!(null);
        let fine: Frozen<Model> = serde_json::from_value(fine).unwrap();
        assert!(!fine.pod_problem_shown());
        assert_eq!(fine.references(), [(Kind::Dataset, "d")]);
        let server: Frozen<Server> = serde_json::from_value(json!({
            "apiVersion": "substratus.ai/v1", "kind": "Server",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"image": "img", "modelName": "m",
                "adapters": [{"name": "a", "model": {"name": "lora"}}]}
        }))
        .unwrap();
        assert_eq!(
            server.references(),
            [(Kind::Model, "m"), (Kind::Model, "lora")]
        );
    }

    #[test]
    fn what_fails_to_parse_as_the_kind_fails_to_parse_frozen() {
        let mut bad = tuned();
        bad["spec"]["resources"]["cpu"] = json!("many");
        let typed = serde_json::from_value::<Model>(bad.clone()).unwrap_err();
        let frozen = serde_json::from_value::<Frozen<Model>>(bad).unwrap_err();
        assert_eq!(typed.to_string(), frozen.to_string());
    }
}
