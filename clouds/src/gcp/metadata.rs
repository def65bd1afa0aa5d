//! The GCE metadata server: project, cluster name and location, and the access token of the
//! node's (or, under GKE Workload Identity, the pod's) Google service account.

use google_cloud_auth::credentials::{AccessTokenCredentials, mds};
use substratus_core::cloud::CloudError;
use substratus_core::conditions::reasons;

use crate::rest;

/// Where the metadata server is: `http://$GCE_METADATA_HOST` (the variable Google's client
/// libraries read), else `http://metadata.google.internal`.
pub fn default_endpoint() -> String {
    match std::env::var("GCE_METADATA_HOST") {
        Ok(h) if !h.is_empty() => format!("http://{h}"),
        _ => "http://metadata.google.internal".into(),
    }
}

/// A client of the metadata server.
#[derive(Clone, Debug)]
pub struct Metadata {
    endpoint: String,
    http: reqwest::Client,
}

impl Metadata {
    pub fn new(endpoint: &str, http: reqwest::Client) -> Metadata {
        Metadata {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// A value under `/computeMetadata/v1/`, `None` when the server has no such key.
    pub async fn get(&self, path: &str) -> Result<Option<String>, CloudError> {
        let url = format!("{}/computeMetadata/v1/{path}", self.endpoint);
        let resp = self
            .http
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| CloudError::Transient(format!("metadata server {url}: {e}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CloudError::Transient(format!("metadata server {url}: {e}")))?;
        if !status.is_success() {
            return Err(rest::status_error(
                &format!("metadata server {url}"),
                status,
                &text,
            ));
        }
        Ok(Some(text.trim().to_owned()))
    }
}

/// Access tokens of the metadata server's default service account (under GKE Workload
/// Identity, the pod's Google service account), cached and refreshed ahead of expiry by
/// Google's auth crate. Its refresh loop stops for good on an answer it deems permanent (a 403
/// while a Workload Identity binding propagates, say): the credentials are then built afresh,
/// so the next call asks again. Built on first use, inside the runtime its refresh task needs.
#[derive(Debug)]
pub struct MetadataTokens {
    endpoint: String,
    credentials: std::sync::Mutex<Option<AccessTokenCredentials>>,
}

impl MetadataTokens {
    pub fn new(endpoint: &str) -> MetadataTokens {
        MetadataTokens {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            credentials: std::sync::Mutex::new(None),
        }
    }

    fn credentials(&self) -> Result<AccessTokenCredentials, CloudError> {
        let mut slot = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = mds::Builder::default()
            .with_endpoint(self.endpoint.clone())
            .build_access_token_credentials()
            .map_err(|e| CloudError::Permanent {
                reason: reasons::CLOUD_ERROR,
                message: format!("metadata server credentials: {e}"),
            })?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A valid access token.
    pub async fn get(&self) -> Result<String, CloudError> {
        let credentials = self.credentials()?;
        let e = match credentials.access_token().await {
            Ok(t) => return Ok(t.token),
            Err(e) => e,
        };
        // The crate's outer messages speak of its own refresh loop ("future attempts will not
        // succeed"), which the rebuild below makes untrue; the causes under them carry the
        // status and the server's answer.
        let mut causes = Vec::new();
        let mut cause: Option<&dyn std::error::Error> = Some(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.contains("future attempts") {
                causes.push(text);
            }
            cause = c.source();
        }
        if causes.is_empty() {
            causes.push(e.to_string());
        }
        let message = format!(
            "metadata server {}: access token: {}",
            self.endpoint,
            causes.join(": ")
        );
        if e.is_transient() {
            return Err(CloudError::Transient(message));
        }
        *self.credentials.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Err(CloudError::Permanent {
            reason: reasons::CLOUD_ERROR,
            message,
        })
    }
}

/// What the metadata server tells about the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    pub project: Option<String>,
    pub project_number: Option<String>,
    pub cluster_name: Option<String>,
    pub cluster_location: Option<String>,
    pub service_account: Option<String>,
}

impl Metadata {
    /// Reads project, cluster name and location, and the service account's email.
    pub async fn discover(&self) -> Result<Discovered, CloudError> {
        Ok(Discovered {
            project: self.get("project/project-id").await?,
            project_number: self.get("project/numeric-project-id").await?,
            cluster_name: self.get("instance/attributes/cluster-name").await?,
            cluster_location: self.get("instance/attributes/cluster-location").await?,
            service_account: self.get("instance/service-accounts/default/email").await?,
        })
    }
}

/// The region of a GKE location: `us-central1-a` → `us-central1`, `us-central1` unchanged.
pub fn region_of(location: &str) -> Option<String> {
    let parts: Vec<&str> = location.split('-').collect();
    match parts.as_slice() {
        [a, b] if !a.is_empty() && !b.is_empty() => Some(location.to_owned()),
        [a, b, z] if !a.is_empty() && !b.is_empty() && z.len() == 1 => Some(format!("{a}-{b}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_of_zones_and_regions() {
        assert_eq!(region_of("us-central1-a").as_deref(), Some("us-central1"));
        assert_eq!(region_of("europe-west4").as_deref(), Some("europe-west4"));
        assert_eq!(region_of("nowhere"), None);
        assert_eq!(region_of("a-b-cd"), None);
    }
}
