//! The small REST calls no SDK in the graph serves (metadata servers, IAM policies, ARM):
//! one HTTP client with bounded timeouts, and errors classified for the reconcilers.

use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use substratus_core::cloud::CloudError;
use substratus_core::conditions::reasons;

/// A client whose every request ends within 30 s (5 s to connect).
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The error a non-success answer stands for: throttling, conflicts and server errors are
/// worth retrying; a refusal is not until someone changes a permission or the configuration.
pub fn status_error(what: &str, status: StatusCode, body: &str) -> CloudError {
    let body: String = body.chars().take(300).collect();
    let message = format!("{what}: HTTP {}: {}", status.as_u16(), body.trim());
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::CONFLICT
        || status == StatusCode::PRECONDITION_FAILED
        || status == StatusCode::REQUEST_TIMEOUT
    {
        CloudError::Transient(message)
    } else {
        CloudError::Permanent {
            reason: reasons::CLOUD_ERROR,
            message,
        }
    }
}

/// Sends a request and reads a JSON answer; `Ok(None)` on 404.
pub async fn json(req: RequestBuilder, what: &str) -> Result<Option<Value>, CloudError> {
    let resp = req
        .send()
        .await
        .map_err(|e| CloudError::Transient(format!("{what}: {e}")))?;
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let text = resp
        .text()
        .await
        .map_err(|e| CloudError::Transient(format!("{what}: {e}")))?;
    if !status.is_success() {
        return Err(status_error(what, status, &text));
    }
    if text.trim().is_empty() {
        return Ok(Some(Value::Null));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CloudError::Transient(format!("{what}: answer is not JSON: {e}")))
}

/// Like [`json`], with 404 an error too.
pub async fn json_found(req: RequestBuilder, what: &str) -> Result<Value, CloudError> {
    json(req, what).await?.ok_or_else(|| CloudError::Permanent {
        reason: reasons::CLOUD_ERROR,
        message: format!("{what}: not found"),
    })
}

/// An access token and when to stop using it.
#[derive(Clone, Debug)]
pub struct Token {
    pub secret: String,
    pub expires: Instant,
}

/// Percent-encodes one path segment (an object name inside a URL path).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Percent-encodes an object key for a URL path, keeping its `/` separators.
pub fn encode_path(key: &str) -> String {
    key.split('/').map(segment).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_permanent_and_the_rest_transient() {
        for s in [500, 503, 429, 409, 412] {
            let e = status_error("x", StatusCode::from_u16(s).unwrap(), "b");
            assert!(matches!(e, CloudError::Transient(_)), "{s}");
        }
        for s in [400, 401, 403] {
            let e = status_error("x", StatusCode::from_u16(s).unwrap(), "no");
            assert!(matches!(e, CloudError::Permanent { .. }), "{s}");
            assert!(e.to_string().contains(&s.to_string()), "{e}");
        }
    }
}
