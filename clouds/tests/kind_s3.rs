//! The kind backend against a real S3-compatible server on loopback (versitygw): signed URL
//! round trips, the md5 read back, tampered and expired uploads.

mod common;

use std::time::Duration;

use md5::{Digest, Md5};
use substratus_clouds::gpu::GpuCatalog;
use substratus_clouds::kind::{KindCloud, KindSettings, md5_base64};
use substratus_core::cloud::{BucketUrl, Cloud, CloudConfig};

use substratus_devcluster::s3::{ACCESS_KEY as ACCESS, S3Server, SECRET_KEY as SECRET};

fn start_s3(bucket: &str) -> S3Server {
    let bins = substratus_devcluster::locate_binaries().expect("test binaries");
    S3Server::start(&bins, bucket).expect("versitygw")
}

fn cloud(s3: &S3Server) -> KindCloud {
    KindCloud::new(
        CloudConfig {
            cluster_name: "kind".into(),
            artifact_bucket: BucketUrl::parse("s3://artifacts").unwrap(),
            registry: "registry.local:5000".into(),
            principal: None,
            tenancy: Default::default(),
        },
        KindSettings {
            endpoint: s3.endpoint(),
            public_endpoint: None,
            region: "us-east-1".into(),
            access_key_id: ACCESS.into(),
            secret_access_key: SECRET.into(),
            csi_driver: "ru.yandex.s3.csi".into(),
            csi_secret: ("kube-system".into(), "csi-s3-secret".into()),
            registry_mirror: None,
            volumes: Default::default(),
        },
        GpuCatalog::kind(),
    )
    .unwrap()
}

fn md5_hex(data: &[u8]) -> String {
    substratus_core::names::hex(&Md5::digest(data))
}

async fn put(url: &str, body: Vec<u8>, md5_hex: &str) -> reqwest::Response {
    reqwest::Client::new()
        .put(url)
        .header("Content-MD5", md5_base64(md5_hex).unwrap())
        .body(body)
        .send()
        .await
        .expect("PUT to the signed URL")
}

#[tokio::test]
async fn a_signed_upload_round_trips_and_its_md5_is_read_back() {
    let s3 = start_s3("artifacts");
    let c = cloud(&s3);
    let key = "abc123/uploads/latest.tar.gz";
    assert_eq!(c.stored_md5(key).await.unwrap(), None, "nothing stored yet");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let md5 = md5_hex(&body);
    let signed = c
        .signed_upload_url(key, &md5, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(signed.url.starts_with(&s3.endpoint()), "{}", signed.url);
    assert!(signed.url.contains("X-Amz-Signature"), "{}", signed.url);
    let res = put(&signed.url, body.clone(), &md5).await;
    assert!(
        res.status().is_success(),
        "{} {}",
        res.status(),
        res.text().await.unwrap_or_default()
    );
    assert_eq!(c.stored_md5(key).await.unwrap(), Some(md5));
}

#[tokio::test]
async fn bytes_that_do_not_match_the_declared_md5_are_refused() {
    let s3 = start_s3("artifacts");
    let c = cloud(&s3);
    let key = "tampered/uploads/latest.tar.gz";
    let declared = md5_hex(b"the real archive");
    let signed = c
        .signed_upload_url(key, &declared, Duration::from_secs(300))
        .await
        .unwrap();
    let res = put(&signed.url, b"something else".to_vec(), &declared).await;
    assert!(
        res.status().is_client_error(),
        "tampered upload accepted: {}",
        res.status()
    );
    assert_eq!(
        c.stored_md5(key).await.unwrap(),
        None,
        "nothing may be stored"
    );
}

#[tokio::test]
async fn the_url_is_bound_to_the_declared_md5() {
    let s3 = start_s3("artifacts");
    let c = cloud(&s3);
    let key = "bound/uploads/latest.tar.gz";
    let declared = md5_hex(b"archive one");
    let signed = c
        .signed_upload_url(key, &declared, Duration::from_secs(300))
        .await
        .unwrap();
    // A client that sends other bytes with their own (correct) md5 breaks the signature.
    let other = b"archive two".to_vec();
    let res = put(&signed.url, other.clone(), &md5_hex(&other)).await;
    assert_eq!(
        res.status().as_u16(),
        403,
        "a URL for one md5 accepted another"
    );
    assert_eq!(c.stored_md5(key).await.unwrap(), None);
}

#[tokio::test]
async fn an_expired_url_is_refused() {
    let s3 = start_s3("artifacts");
    let c = cloud(&s3);
    let key = "late/uploads/latest.tar.gz";
    let body = b"late archive".to_vec();
    let md5 = md5_hex(&body);
    let signed = c
        .signed_upload_url(key, &md5, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = put(&signed.url, body, &md5).await;
    assert_eq!(res.status().as_u16(), 403, "an expired URL was accepted");
    assert_eq!(c.stored_md5(key).await.unwrap(), None);
}

#[tokio::test]
async fn a_signed_url_names_one_object_and_expires_as_configured() {
    let s3 = start_s3("artifacts");
    let c = cloud(&s3);
    let key = "one/uploads/latest.tar.gz";
    let body = b"one archive".to_vec();
    let md5 = md5_hex(&body);
    let before = jiff::Timestamp::now().as_second();
    let signed = c
        .signed_upload_url(key, &md5, Duration::from_secs(300))
        .await
        .unwrap();
    let url = reqwest::Url::parse(&signed.url).unwrap();
    assert_eq!(
        url.path(),
        format!("/artifacts/{key}"),
        "exactly this object"
    );
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["X-Amz-Expires"], "300");
    assert!((signed.expires_at_unix - before - 300).abs() <= 2);
    // The same signature for another object, a neighbour or a path escaping the prefix: refused.
    for other in [
        "one/uploads/other.tar.gz",
        "two/uploads/latest.tar.gz",
        "one/uploads/../../two/uploads/latest.tar.gz",
    ] {
        let mut moved = url.clone();
        moved.set_path(&format!("/artifacts/{other}"));
        let res = put(moved.as_str(), body.clone(), &md5).await;
        assert_eq!(
            res.status().as_u16(),
            403,
            "{other} accepted a URL signed for {key}"
        );
    }
    assert_eq!(
        c.stored_md5("one/uploads/other.tar.gz").await.unwrap(),
        None
    );
    assert_eq!(
        c.stored_md5("two/uploads/latest.tar.gz").await.unwrap(),
        None
    );
    assert_eq!(put(&signed.url, body, &md5).await.status().as_u16(), 200);
}

#[tokio::test]
async fn a_folder_is_copied_object_by_object_inside_the_bucket() {
    let s3 = start_s3("artifacts");
    common::copies_exactly_a_folder(&cloud(&s3)).await;
}
