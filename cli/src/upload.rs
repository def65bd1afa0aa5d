//! The PUT of an archive to a signed URL: streamed from the file (memory stays bounded),
//! with `Content-MD5` (the URL is bound to it), a progress bar, and retries of what may pass
//! (network errors, 5xx, throttling). An expired URL is reported as such, so that the caller
//! asks for a fresh one.

use std::path::Path;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use base64::Engine;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// Why a PUT did not store the archive.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The URL's lifetime is over: ask for a fresh one.
    #[error("the signed URL expired: {0}")]
    Expired(String),
    /// Storage refused the request; retrying the same request cannot help.
    #[error("storage refused the upload (HTTP {status}): {body}")]
    Refused { status: u16, body: String },
    /// Network or server trouble that outlasted the retries.
    #[error("upload failed: {0}")]
    Transient(String),
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
}

impl UploadError {
    fn retryable(&self) -> bool {
        matches!(self, UploadError::Transient(_))
    }
}

/// `Content-MD5` of a hex md5.
pub fn content_md5(md5_hex: &str) -> String {
    let bytes: Vec<u8> = (0..md5_hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(md5_hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A progress bar for `size` bytes, hidden when stderr is not a terminal.
pub fn progress(size: u64) -> ProgressBar {
    let bar = ProgressBar::new(size);
    if let Ok(style) = ProgressStyle::with_template(
        "uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Whether an error response means the URL expired (S3: `AccessDenied` "Request has
/// expired"; GCS: `ExpiredToken`; Azure: "Signed expiry time ... has to be after").
fn is_expiry(status: u16, body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    (status == 400 || status == 403)
        && (b.contains("expired") || b.contains("expiry") || b.contains("request has expired"))
}

async fn put_once(
    http: &reqwest::Client,
    url: &str,
    path: &Path,
    md5_hex: &str,
    bar: &ProgressBar,
) -> Result<(), UploadError> {
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    bar.set_position(0);
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |c| {
        if let Ok(c) = c {
            progress.inc(c.len() as u64);
        }
    });
    let res = http
        .put(url)
        .header("Content-MD5", content_md5(md5_hex))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", size)
        // Azure Blob needs the blob type on a PUT; other stores ignore the header.
        .header("x-ms-blob-type", "BlockBlob")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| UploadError::Transient(e.to_string()))?;
    let status = res.status().as_u16();
    if res.status().is_success() {
        return Ok(());
    }
    let body = res.text().await.unwrap_or_default();
    let body: String = body.chars().take(2000).collect();
    if is_expiry(status, &body) {
        Err(UploadError::Expired(body))
    } else if status >= 500 || status == 429 || status == 408 {
        Err(UploadError::Transient(format!("HTTP {status}: {body}")))
    } else {
        Err(UploadError::Refused { status, body })
    }
}

/// PUTs `path` to `url`, retrying transient failures (5 attempts, exponential backoff).
pub async fn put_file(
    url: &str,
    path: &Path,
    md5_hex: &str,
    bar: &ProgressBar,
) -> Result<(), UploadError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| UploadError::Transient(e.to_string()))?;
    (|| put_once(&http, url, path, md5_hex, bar))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(4),
        )
        .when(UploadError::retryable)
        .notify(|e, after| bar.println(format!("upload: {e}; retrying in {after:?}")))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_md5_is_base64_of_the_bytes() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e, base64 1B2M2Y8AsgTpgAmY7PhCfg==
        assert_eq!(
            content_md5("d41d8cd98f00b204e9800998ecf8427e"),
            "1B2M2Y8AsgTpgAmY7PhCfg=="
        );
    }

    #[test]
    fn expiry_is_told_apart_from_other_refusals() {
        assert!(is_expiry(
            403,
            "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        ));
        assert!(is_expiry(400, "<Code>ExpiredToken</Code>"));
        assert!(!is_expiry(403, "<Code>SignatureDoesNotMatch</Code>"));
        assert!(!is_expiry(500, "expired"));
    }
}
