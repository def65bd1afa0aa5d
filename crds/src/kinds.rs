//! The four kinds of `substratus.ai/v1`.
//!
//! Every spec shares the workload fields (`image`, `build`, `command`, `env`, `params`,
//! `resources`); [`workload_spec!`] writes them once so that the JSON names stay identical.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{
    Adapter, ArtifactObjectStatus, Autoscaling, Build, NotebookStatus, ObjectRef, Params,
    Resources, Routing, ServerStatus,
};

/// Longest suffix the controllers append to an object's name, per kind
/// (`-<kind>-params`, `-<kind>-bld`, `-modeller`, `-data-loader`, `-server`, `-notebook`).
/// Child names must fit the 63 characters of a label value / DNS label.
pub const MAX_CHILD_NAME: usize = 63;

/// Fields every kind's spec has, with the accessors the controllers use.
pub trait WorkloadSpec {
    fn image(&self) -> Option<&str>;
    fn build(&self) -> Option<&Build>;
    fn command(&self) -> &[String];
    fn env(&self) -> &BTreeMap<String, String>;
    fn params(&self) -> &Params;
    fn resources(&self) -> Option<&Resources>;
}

macro_rules! workload_spec {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            /// Container image to run. Filled in by the controller after a successful build.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(length(min = 1, max = 1024), regex(pattern = r"^\S+$"))]
            pub image: Option<String>,
            // Boxed: most objects have none, and the operator holds every object in memory.
            /// Build the image from git or from an upload.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub build: Option<Box<Build>>,
            /// Container command: at most 64 items of at most 4,096 characters.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            #[schemars(length(max = 64), inner(length(max = 4096)))]
            pub command: Vec<String>,
            /// Container environment. A value `${{ secrets.NAME.KEY }}` reads key KEY of Secret NAME.
            /// At most 256 variables; names of at most 256 characters, values of at most 32,768.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            #[schemars(extend(
                "maxProperties" = 256,
                "additionalProperties" = {"type": "string", "maxLength": 32768},
                "x-kubernetes-validations" = [{
                    "rule": "self.all(k, k.size() <= 256 && k.matches('^[ -<>-~]+$'))",
                    "message": "spec.env keys must be at most 256 printable ASCII characters without '='"
                }]
            ))]
            pub env: BTreeMap<String, String>,
            /// Parameters written as JSON to `/content/params.json`: at most 256, names of at
            /// most 256 characters, string values of at most 65,536.
            #[serde(default, skip_serializing_if = "Params::is_empty")]
            #[schemars(extend(
                "maxProperties" = 256,
                "x-kubernetes-validations" = [{
                    "rule": "self.all(k, k.size() <= 256)",
                    "message": "spec.params names must be at most 256 characters"
                }]
            ))]
            pub params: Params,
            /// Compute requests and GPUs.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub resources: Option<Resources>,
            $( $(#[$fmeta])* pub $field : $ty, )*
        }

        impl WorkloadSpec for $name {
            fn image(&self) -> Option<&str> {
                self.image.as_deref()
            }
            fn build(&self) -> Option<&Build> {
                self.build.as_deref()
            }
            fn command(&self) -> &[String] {
                &self.command
            }
            fn env(&self) -> &BTreeMap<String, String> {
                &self.env
            }
            fn params(&self) -> &Params {
                &self.params
            }
            fn resources(&self) -> Option<&Resources> {
                self.resources.as_ref()
            }
        }
    };
}

workload_spec! {
    /// A Model: imported by a loader image, or trained from a base `model` on a `dataset`.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
    #[kube(
        group = "substratus.ai",
        version = "v1",
        kind = "Model",
        doc = "A Model of substratus.ai/v1: weights imported by a loader or trained on a Dataset.",
        namespaced,
        derive = "PartialEq",
        status = "ArtifactObjectStatus",
        category = "ai",
        printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
        printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
        printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
        selectable = ".spec.model.name",
        selectable = ".spec.dataset.name",
        validation = kube::core::Rule::new("self.metadata.name.size() <= 50")
            .message("metadata.name of a Model must be at most 50 characters so that its children's names fit in 63"),
        validation = kube::core::Rule::new("!has(self.spec.model) || self.spec.model.name != self.metadata.name")
            .message("spec.model.name must name another Model: a Model cannot start from itself"),
    )]
    #[x_kube(validation = kube::core::Rule::new("has(self.image) || has(self.build)")
        .message("spec.image or spec.build must be set"))]
    pub struct ModelSpec {
        /// Base Model to start from (mounted read-only at `/content/model`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub model: Option<ObjectRef>,
        /// Dataset to train on (mounted read-only at `/content/data`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dataset: Option<ObjectRef>,
    }
}

workload_spec! {
    /// A Dataset: a loader image pulls and transforms data into `/content/artifacts`.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
    #[kube(
        group = "substratus.ai",
        version = "v1",
        kind = "Dataset",
        doc = "A Dataset of substratus.ai/v1: data pulled and transformed into the bucket.",
        namespaced,
        derive = "PartialEq",
        status = "ArtifactObjectStatus",
        category = "ai",
        shortname = "data",
        printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
        printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
        printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
        validation = kube::core::Rule::new("self.metadata.name.size() <= 48")
            .message("metadata.name of a Dataset must be at most 48 characters so that its children's names fit in 63"),
    )]
    #[x_kube(validation = kube::core::Rule::new("has(self.image) || has(self.build)")
        .message("spec.image or spec.build must be set"))]
    pub struct DatasetSpec {}
}

workload_spec! {
    /// A Server: serves a Model over HTTP on port 8080.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
    #[kube(
        group = "substratus.ai",
        version = "v1",
        kind = "Server",
        doc = "A Server of substratus.ai/v1: a Model served over HTTP.",
        namespaced,
        derive = "PartialEq",
        status = "ServerStatus",
        category = "ai",
        printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
        printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
        printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
        printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
        scale(spec_replicas_path = ".spec.replicas", status_replicas_path = ".status.replicas", label_selector_path = ".status.selector"),
        selectable = ".spec.model.name",
        validation = kube::core::Rule::new("self.metadata.name.size() <= 49")
            .message("metadata.name of a Server must be at most 49 characters so that its children's names fit in 63"),
        validation = kube::core::Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
            .message("metadata.name of a Server must be lower-case letters, digits and '-', start with a letter and end with a letter or digit (no '.'): its Service is named after it"),
    )]
    #[x_kube(validation = kube::core::Rule::new("has(self.image) || has(self.build)")
        .message("spec.image or spec.build must be set"))]
    #[x_kube(validation = kube::core::Rule::new("has(self.model) || has(self.modelName)")
        .message("spec.model.name is required"))]
    #[x_kube(validation = kube::core::Rule::new("!has(self.model) || !has(self.modelName) || self.model.name == self.modelName")
        .message("spec.modelName is a legacy alias of spec.model.name and must not differ from it"))]
    pub struct ServerSpec {
        /// The Model to serve (mounted read-only at `/content/model`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub model: Option<ObjectRef>,
        /// Legacy spelling of `model.name` from early releases; prefer `model.name`.
        #[serde(rename = "modelName", default, skip_serializing_if = "Option::is_none")]
        #[schemars(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
        )]
        pub model_name: Option<String>,
        /// Number of serving replicas (default 1). Defaulted by the API server, so that the
        /// scale subresource (`kubectl scale`, autoscalers) always finds it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 1000), extend("default" = 1))]
        pub replicas: Option<i32>,
        /// Names the gateway routes to this Server, besides its own name (a request's
        /// `model`). At most 16, each a DNS subdomain.
        #[serde(rename = "servedModelNames", default, skip_serializing_if = "Vec::is_empty")]
        #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")))]
        pub served_model_names: Vec<String>,
        /// Fine-tuned Models served next to `model`, each from `/content/adapters/<name>`,
        /// answering at the gateway to `<server>/<name>`. At most 16, names unique.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
        pub adapters: Vec<Adapter>,
        /// Replicas driven by the gateway's in-flight requests. When set, the gateway owns
        /// `spec.replicas` (through the scale subresource).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub autoscaling: Option<Autoscaling>,
        /// How the gateway spreads requests over the replicas.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub routing: Option<Routing>,
    }
}

workload_spec! {
    /// A Notebook: Jupyter on port 8888 next to a Model and a Dataset.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
    #[kube(
        group = "substratus.ai",
        version = "v1",
        kind = "Notebook",
        doc = "A Notebook of substratus.ai/v1: Jupyter next to a Model and a Dataset.",
        namespaced,
        derive = "PartialEq",
        status = "NotebookStatus",
        category = "ai",
        shortname = "nb",
        printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
        printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
        printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
        printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
        selectable = ".spec.model.name",
        selectable = ".spec.dataset.name",
        validation = kube::core::Rule::new("self.metadata.name.size() <= 47")
            .message("metadata.name of a Notebook must be at most 47 characters so that its children's names fit in 63"),
    )]
    #[x_kube(validation = kube::core::Rule::new("has(self.image) || has(self.build)")
        .message("spec.image or spec.build must be set"))]
    #[x_kube(validation = kube::core::Rule::new("!has(self.model) || !has(self.modelName) || self.model.name == self.modelName")
        .message("spec.modelName is a legacy alias of spec.model.name and must not differ from it"))]
    pub struct NotebookSpec {
        /// Stop the notebook Pod (artifacts in the bucket are kept). Absent means running.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub suspend: Option<bool>,
        /// Model mounted read-only at `/content/model`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub model: Option<ObjectRef>,
        /// Legacy spelling of `model.name` from early releases; prefer `model.name`.
        #[serde(rename = "modelName", default, skip_serializing_if = "Option::is_none")]
        #[schemars(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
        )]
        pub model_name: Option<String>,
        /// Dataset mounted read-only at `/content/data`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dataset: Option<ObjectRef>,
    }
}

impl ServerSpec {
    /// The Model this Server serves: `model.name`, or the legacy `modelName`.
    pub fn model_name(&self) -> Option<&str> {
        self.model
            .as_ref()
            .map(|m| m.name.as_str())
            .or(self.model_name.as_deref())
    }

    /// Serving replicas, 1 when unset.
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(1)
    }
}

impl NotebookSpec {
    /// The Model mounted into the notebook: `model.name`, or the legacy `modelName`.
    pub fn model_name(&self) -> Option<&str> {
        self.model
            .as_ref()
            .map(|m| m.name.as_str())
            .or(self.model_name.as_deref())
    }

    /// True when the notebook is asked to stop.
    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }
}
