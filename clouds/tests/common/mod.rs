//! Shared by the cloud backends' tests: the recording fake of provider APIs and the upload
//! path `sub` runs.
#![allow(dead_code)]

#[path = "../../../tests/src/fake_api.rs"]
mod fake_api;
pub use fake_api::*;

/// PUTs `body` to a signed URL with the upload code `sub` runs.
pub async fn put_like_sub(url: &str, body: &[u8], md5_hex: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latest.tar.gz");
    std::fs::write(&path, body).unwrap();
    substratus_cli::upload::put_file(url, &path, md5_hex, &indicatif::ProgressBar::hidden())
        .await
        .map_err(|e| e.to_string())
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    substratus_core::names::hex(&md5::Md5::digest(data))
}
