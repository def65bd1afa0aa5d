//! Shared by the cloud backends' tests: the recording fake of provider APIs and the upload
//! path `sub` runs.
#![allow(dead_code)]

#[path = "../../../tests/src/fake_api.rs"]
mod fake_api;
#[allow(unused_imports)]
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

/// Stores objects under `x/artifacts` (and one beside it, `x/artifactsX`) through signed
/// URLs, copies the folder to `y/artifacts/sql/3` with [`Cloud::copy_folder`] and checks
/// that exactly the folder's objects arrived, byte for byte (by their md5s), and that a
/// location outside the configured bucket is refused.
pub async fn copies_exactly_a_folder(c: &dyn substratus_core::cloud::Cloud) {
    use std::time::Duration;
    use substratus_core::cloud::CloudError;
    let bucket = c.config().artifact_bucket.clone();
    let objects: [(&str, Vec<u8>); 4] = [
        (
            "x/artifacts/model.safetensors",
            (0..70_000u32).map(|i| (i % 251) as u8).collect(),
        ),
        (
            "x/artifacts/tokenizer/config.json",
            b"{\"type\": \"char\"}".to_vec(),
        ),
        ("x/artifactsX/beside", b"not in the folder".to_vec()),
        (
            "x/other/artifacts/deeper",
            b"not in the folder either".to_vec(),
        ),
    ];
    for (key, body) in &objects {
        let md5 = md5_hex(body);
        let url = c
            .signed_upload_url(key, &md5, Duration::from_secs(300))
            .await
            .unwrap();
        put_like_sub(&url.url, body, &md5).await.unwrap();
    }
    let from = bucket.join("x/artifacts");
    let to = bucket.join("y/artifacts/sql/3");
    assert_eq!(c.copy_folder(&from, &to).await.unwrap(), 2);
    for (key, body) in &objects[..2] {
        let copy = key.replacen("x/artifacts", "y/artifacts/sql/3", 1);
        assert_eq!(
            c.stored_md5(&copy).await.unwrap(),
            Some(md5_hex(body)),
            "{copy}"
        );
        // The source is still there.
        assert_eq!(c.stored_md5(key).await.unwrap(), Some(md5_hex(body)));
    }
    for absent in [
        "y/artifacts/sql/3X/beside",
        "y/artifacts/sql/3/beside",
        "y/artifacts/sql/3/deeper",
    ] {
        assert_eq!(c.stored_md5(absent).await.unwrap(), None, "{absent}");
    }
    // Copying again over the copy is the same copy.
    assert_eq!(c.copy_folder(&from, &to).await.unwrap(), 2);
    // An empty folder copies nothing.
    assert_eq!(
        c.copy_folder(&bucket.join("nothing"), &to).await.unwrap(),
        0
    );

    let mut elsewhere = from.clone();
    elsewhere.bucket = "someone-elses".into();
    for (f, t) in [(&elsewhere, &to), (&from, &elsewhere)] {
        match c.copy_folder(f, t).await {
            Err(CloudError::Permanent { message, .. }) => {
                assert!(
                    message.contains("not in the configured bucket"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
