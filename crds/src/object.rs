//! Any object of the API, dispatched on `kind`; used to read user manifests.

use serde_json::Value;

use crate::{Dataset, GROUP, Model, Notebook, Server, VERSION};

/// One object of `substratus.ai/v1`, of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyObject {
    Model(Model),
    Dataset(Dataset),
    Server(Server),
    Notebook(Notebook),
}

/// Why a manifest is not an object of this API.
#[derive(Debug)]
pub enum ManifestError {
    /// `apiVersion` is missing or is not `substratus.ai/v1`.
    ApiVersion(Option<String>),
    /// `kind` is missing or is not one of the four kinds.
    Kind(Option<String>),
    /// The object does not match its kind's schema; the message names the field.
    Invalid(serde_json::Error),
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::ApiVersion(v) => write!(
                f,
                "apiVersion: expected {GROUP}/{VERSION}, found {}",
                v.as_deref().unwrap_or("nothing")
            ),
            ManifestError::Kind(k) => write!(
                f,
                "kind: expected Model, Dataset, Server or Notebook, found {}",
                k.as_deref().unwrap_or("nothing")
            ),
            ManifestError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ManifestError {}

impl AnyObject {
    /// Reads one object from its JSON (or YAML-converted) value.
    pub fn from_value(value: Value) -> Result<AnyObject, ManifestError> {
        let api_version = value.get("apiVersion").and_then(Value::as_str);
        if api_version != Some(&format!("{GROUP}/{VERSION}")) {
            return Err(ManifestError::ApiVersion(api_version.map(str::to_owned)));
        }
        let kind = value.get("kind").and_then(Value::as_str).map(str::to_owned);
        let parsed = match kind.as_deref() {
            Some("Model") => serde_json::from_value(value).map(AnyObject::Model),
            Some("Dataset") => serde_json::from_value(value).map(AnyObject::Dataset),
            Some("Server") => serde_json::from_value(value).map(AnyObject::Server),
            Some("Notebook") => serde_json::from_value(value).map(AnyObject::Notebook),
            _ => return Err(ManifestError::Kind(kind)),
        };
        parsed.map_err(ManifestError::Invalid)
    }

    /// The object as JSON, as it would be sent to the API server.
    pub fn to_value(&self) -> Value {
        let v = match self {
            AnyObject::Model(o) => serde_json::to_value(o),
            AnyObject::Dataset(o) => serde_json::to_value(o),
            AnyObject::Server(o) => serde_json::to_value(o),
            AnyObject::Notebook(o) => serde_json::to_value(o),
        };
        // Serialising plain data types into a Value cannot fail.
        v.unwrap_or(Value::Null)
    }

    /// The kind's name, e.g. `Model`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyObject::Model(_) => "Model",
            AnyObject::Dataset(_) => "Dataset",
            AnyObject::Server(_) => "Server",
            AnyObject::Notebook(_) => "Notebook",
        }
    }
}
