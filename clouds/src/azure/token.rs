//! Microsoft Entra tokens under AKS workload identity: the projected service-account token
//! (`AZURE_FEDERATED_TOKEN_FILE`) is exchanged at `<authority>/<tenant>/oauth2/v2.0/token` as
//! a client assertion (client-credentials grant). The workload identity webhook sets
//! `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and
//! `AZURE_AUTHORITY_HOST` in pods whose service account is annotated.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::auth::{AccessToken, Secret, TokenCredential};
use serde::Deserialize;
use substratus_core::cloud::CloudError;
use tokio::sync::Mutex;

use crate::rest::{self, Token};

/// Exchanges the pod's federated token for Entra access tokens, cached per scope.
#[derive(Debug, Clone)]
pub struct WorkloadIdentityToken {
    pub authority_host: String,
    pub tenant_id: String,
    pub client_id: String,
    pub token_file: PathBuf,
    pub http: reqwest::Client,
    cache: Arc<Mutex<HashMap<String, Token>>>,
}

impl WorkloadIdentityToken {
    pub fn new(
        authority_host: &str,
        tenant_id: &str,
        client_id: &str,
        token_file: PathBuf,
        http: reqwest::Client,
    ) -> WorkloadIdentityToken {
        WorkloadIdentityToken {
            authority_host: authority_host.trim_end_matches('/').to_owned(),
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            token_file,
            http,
            cache: Arc::default(),
        }
    }

    /// A token for `scope` (e.g. `https://management.azure.com/.default`).
    pub async fn token(&self, scope: &str) -> Result<Token, CloudError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.get(scope)
            && t.expires > Instant::now() + Duration::from_secs(60)
        {
            return Ok(t.clone());
        }
        // Read every time: the kubelet rotates the projected token.
        let assertion = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| CloudError::Permanent {
                reason: substratus_core::conditions::reasons::CLOUD_ERROR,
                message: format!(
                    "AZURE_FEDERATED_TOKEN_FILE {}: {e} (is the operator's service account annotated for workload identity?)",
                    self.token_file.display()
                ),
            })?;
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            expires_in: u64,
        }
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_host, self.tenant_id
        );
        let answer = rest::json_found(
            self.http.post(url).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("scope", scope),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.trim()),
            ]),
            "Entra token exchange",
        )
        .await?;
        let a: Answer = serde_json::from_value(answer)
            .map_err(|e| CloudError::Transient(format!("Entra token answer: {e}")))?;
        let t = Token {
            secret: a.access_token,
            expires: Instant::now() + Duration::from_secs(a.expires_in),
        };
        cache.insert(scope.to_owned(), t.clone());
        Ok(t)
    }
}

#[async_trait::async_trait]
impl TokenCredential for WorkloadIdentityToken {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let scope = scopes
            .first()
            .copied()
            .unwrap_or("https://storage.azure.com/.default");
        let t = self.token(scope).await.map_err(|e| {
            azure_core::error::Error::message(
                azure_core::error::ErrorKind::Credential,
                e.to_string(),
            )
        })?;
        let left = t.expires.saturating_duration_since(Instant::now());
        Ok(AccessToken::new(
            Secret::new(t.secret),
            time::OffsetDateTime::now_utc() + left,
        ))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        self.cache.lock().await.clear();
        Ok(())
    }
}
