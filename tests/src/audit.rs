//! Reading the API server's audit log: what a user sent, by verb and resource.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// One request, as the audit log records it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub verb: String,
    pub user: AuditUser,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    pub request_received_timestamp: String,
    #[serde(default, rename = "requestURI")]
    pub request_uri: String,
    /// The answer's status, when the log records it.
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: Option<u16>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AuditUser {
    pub username: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl AuditEntry {
    /// True for create, update, patch and delete.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// `resource[/subresource]`.
    pub fn resource(&self) -> String {
        match &self.object_ref {
            Some(o) => match &o.subresource {
                Some(s) => format!("{}/{s}", o.resource),
                None => o.resource.clone(),
            },
            None => self.request_uri.clone(),
        }
    }
}

/// The entries of `user` received at or after `since` (RFC 3339, compared as instants).
pub fn entries(log: &Path, user: &str, since: jiff::Timestamp) -> Vec<AuditEntry> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok())
        .filter(|e| e.user.username == user)
        .filter(|e| {
            e.request_received_timestamp
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t >= since)
        })
        .collect()
}

/// Counts by `verb resource`.
pub fn count_by_verb_and_resource(entries: &[AuditEntry]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in entries {
        *out.entry(format!("{} {}", e.verb, e.resource()))
            .or_default() += 1;
    }
    out
}
