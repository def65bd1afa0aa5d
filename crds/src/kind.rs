//! The four kinds of the API, by name: what the operator, `sub` and the tests dispatch on.

use kube::core::ApiResource;
use serde_json::Value;

use crate::{API_VERSION, GROUP, VERSION};

/// One of the four kinds of `substratus.ai/v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Model,
    Dataset,
    Server,
    Notebook,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Model, Kind::Dataset, Kind::Server, Kind::Notebook];

    /// `Model`, `Dataset`, ...: the `kind` of a manifest.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Model => "Model",
            Kind::Dataset => "Dataset",
            Kind::Server => "Server",
            Kind::Notebook => "Notebook",
        }
    }

    /// `model`, `dataset`, ...: used in child names, labels and the storage hash.
    pub fn lower(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Dataset => "dataset",
            Kind::Server => "server",
            Kind::Notebook => "notebook",
        }
    }

    /// The resource's plural, as in `models.substratus.ai`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Model => "models",
            Kind::Dataset => "datasets",
            Kind::Server => "servers",
            Kind::Notebook => "notebooks",
        }
    }

    /// What users type for a kind: `model`, `models`, `Model`, `data`, `srv`, `nb`, ...
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "model" | "models" => Some(Kind::Model),
            "dataset" | "datasets" | "data" => Some(Kind::Dataset),
            "server" | "servers" | "srv" => Some(Kind::Server),
            "notebook" | "notebooks" | "nb" => Some(Kind::Notebook),
            _ => None,
        }
    }

    /// The kind of a manifest of this API group (any version), `None` for anything else.
    pub fn of(obj: &Value) -> Option<Kind> {
        let ours = obj["apiVersion"]
            .as_str()
            .and_then(|a| a.split_once('/'))
            .is_some_and(|(group, _)| group == GROUP);
        ours.then(|| obj["kind"].as_str().and_then(Kind::parse))
            .flatten()
    }

    /// The kind as a dynamic API resource.
    pub fn api_resource(self) -> ApiResource {
        ApiResource {
            group: GROUP.into(),
            version: VERSION.into(),
            api_version: API_VERSION.into(),
            kind: self.name().into(),
            plural: self.plural().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_api_version_is_group_and_version() {
        assert_eq!(API_VERSION, format!("{GROUP}/{VERSION}"));
    }

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
            assert_eq!(Kind::parse(k.lower()), Some(k));
            assert_eq!(Kind::parse(k.plural()), Some(k));
            assert_eq!(k.api_resource().plural, k.plural());
        }
        assert_eq!(Kind::parse("nb"), Some(Kind::Notebook));
        assert_eq!(Kind::parse("pod"), None);
    }

    #[test]
    fn only_manifests_of_the_group_have_a_kind() {
        let m = json!({"apiVersion": "substratus.ai/v1", "kind": "Model"});
        assert_eq!(Kind::of(&m), Some(Kind::Model));
        let other = json!({"apiVersion": "example.com/v1", "kind": "Model"});
        assert_eq!(Kind::of(&other), None);
        let lookalike = json!({"apiVersion": "substratus.ai.evil/v1", "kind": "Model"});
        assert_eq!(Kind::of(&lookalike), None);
    }
}
