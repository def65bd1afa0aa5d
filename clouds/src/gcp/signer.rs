//! Signing through the IAM Credentials API's `signBlob`: the Google service account signs as
//! itself with a Google-managed key, so no key file exists anywhere. The caller needs
//! `roles/iam.serviceAccountTokenCreator` on that account.

use std::sync::Arc;

use base64::Engine;
use google_cloud_auth::signer::{SigningError, SigningProvider};
use serde::Deserialize;

use super::metadata::MetadataTokens;
use crate::rest;

/// A [`SigningProvider`] calling `projects/-/serviceAccounts/<email>:signBlob`.
#[derive(Clone, Debug)]
pub struct IamSigner {
    pub email: String,
    /// `https://iamcredentials.googleapis.com`.
    pub endpoint: String,
    pub http: reqwest::Client,
    pub tokens: Arc<MetadataTokens>,
}

type Result<T> = std::result::Result<T, SigningError>;

impl SigningProvider for IamSigner {
    async fn client_email(&self) -> Result<String> {
        Ok(self.email.clone())
    }

    async fn sign(&self, content: &[u8]) -> Result<bytes::Bytes> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            signed_blob: String,
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let token = self
            .tokens
            .get()
            .await
            .map_err(|e| SigningError::from_msg(e.to_string()))?;
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{}:signBlob",
            self.endpoint.trim_end_matches('/'),
            rest::segment(&self.email)
        );
        let answer = rest::json_found(
            self.http
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"payload": b64.encode(content)})),
            "IAM signBlob",
        )
        .await
        .map_err(|e| SigningError::from_msg(e.to_string()))?;
        let answer: Answer = serde_json::from_value(answer)
            .map_err(|e| SigningError::from_msg(format!("IAM signBlob answer: {e}")))?;
        b64.decode(answer.signed_blob)
            .map(bytes::Bytes::from)
            .map_err(|e| SigningError::from_msg(format!("IAM signBlob signature: {e}")))
    }
}
