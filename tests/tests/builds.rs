//! Image builds on the real control plane with the kind backend and a real S3 server: the
//! signed-URL handshake, the md5 checks (S3's and the controller's), URL renewal, reuse of an
//! upload already stored, the build Job, its failure, and git builds.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use substratus_core::plan::build::BuildSettings;
use substratus_devcluster::s3::S3Server;
use substratus_tests::cluster::{TestNamespace, client, shared, wait_for};
use substratus_tests::objects::{api, condition, create, status};
use substratus_tests::operator::{RunningOperator, kind_cloud_on};

const WAIT: Duration = Duration::from_secs(60);

fn md5_hex(data: &[u8]) -> String {
    substratus_core::names::hex(&Md5::digest(data))
}

fn content_md5(md5_hex: &str) -> String {
    let bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&md5_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A build context: any bytes do for the controller, which never unpacks them.
fn context(seed: &str) -> Vec<u8> {
    format!("FROM scratch\n# {seed}\n").repeat(100).into_bytes()
}

fn s3() -> S3Server {
    S3Server::start(&shared().bin_dir, "substratus-artifacts").expect("an S3 server")
}

/// Creates Model `name` as an upload build of `md5`, request `request`.
async fn create_upload_model(c: &kube::Client, ns: &str, name: &str, md5: &str, request: &str) {
    let build = json!({"upload": {"md5Checksum": md5, "requestID": request}});
    create(c, ns, model(name, build)).await;
}

fn model(name: &str, build: Value) -> Value {
    json!({
        "apiVersion": "substratus.ai/v1", "kind": "Model",
        "metadata": {"name": name},
        "spec": {"build": build, "params": {"x": 1}},
    })
}

/// Waits until `type_` has `reason`; returns the status.
async fn wait_condition(
    c: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
    type_: &str,
    reason: &str,
) -> Value {
    wait_for(
        &format!("{kind} {name}: {type_} with reason {reason}"),
        WAIT,
        || async {
            let s = status(c, ns, kind, name).await;
            let (_, r, m) = condition(&s, type_);
            if r == reason {
                Ok(Some(s))
            } else {
                Err(format!("{type_}: {r} {m}"))
            }
        },
    )
    .await
}

/// Waits for a signed URL answering `request`, other than `not`.
async fn wait_url(c: &kube::Client, ns: &str, name: &str, request: &str, not: &str) -> String {
    wait_for("a signed upload URL", WAIT, || async {
        let s = status(c, ns, "Model", name).await;
        let u = &s["buildUpload"];
        match u["signedURL"].as_str() {
            Some(url) if u["requestID"] == request && url != not => Ok(Some(url.to_owned())),
            _ => Err(format!("buildUpload: {u}")),
        }
    })
    .await
}

async fn put(url: &str, body: Vec<u8>, md5_hex: &str) -> u16 {
    reqwest::Client::new()
        .put(url)
        .header("Content-MD5", content_md5(md5_hex))
        .body(body)
        .send()
        .await
        .expect("a PUT to the signed URL")
        .status()
        .as_u16()
}

/// What the CLI does after an upload: touch the object so the controller looks again.
async fn poke(c: &kube::Client, ns: &str, kind: &str, name: &str) {
    let patch = json!({"metadata": {"annotations": {
        "substratus.ai/upload-timestamp": jiff::Timestamp::now().to_string()
    }}});
    api(c, ns, kind)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotating the object");
}

fn target(ns: &str, name: &str, tag: &str) -> String {
    format!("registry.test:5000/test-model-{ns}__{name}:{tag}")
}

/// The image tag of a build written as JSON (`{"git": {...}}`).
fn tag_of(build: &Value) -> String {
    let build: substratus_crds::Build = serde_json::from_value(build.clone()).unwrap();
    substratus_core::plan::build::image_tag(&build)
}

#[tokio::test]
async fn an_uploaded_context_is_verified_built_and_run() {
    let ns = TestNamespace::new("bld-up");
    let c = client().await;
    let s3 = s3();
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let bytes = context("a");
    let md5 = md5_hex(&bytes);
    create_upload_model(&c, &ns.name, "m", &md5, "r1").await;

    let url = wait_url(&c, &ns.name, "m", "r1", "").await;
    let s = status(&c, &ns.name, "Model", "m").await;
    assert_eq!(condition(&s, "Uploaded").1, "AwaitingUpload");
    assert_eq!(condition(&s, "Ready").1, "AwaitingUpload", "{s}");
    assert!(url.contains(&format!(
        "{}/uploads/latest.tar.gz",
        substratus_core::names::storage_prefix(
            "test",
            &ns.name,
            substratus_core::names::Kind::Model,
            "m"
        )
    )));

    // Other bytes under the declared md5, and other bytes with their own md5 (the URL is
    // bound to the declared one), are refused by storage.
    let tampered = context("tampered");
    assert!(put(&url, tampered.clone(), &md5).await >= 400);
    assert!(put(&url, tampered.clone(), &md5_hex(&tampered)).await >= 400);
    assert_eq!(put(&url, bytes.clone(), &md5).await, 200);
    poke(&c, &ns.name, "Model", "m").await;

    let s = wait_condition(&c, &ns.name, "Model", "m", "Uploaded", "UploadFound").await;
    assert_eq!(s["buildUpload"]["storedMD5Checksum"], md5.as_str());
    assert!(
        s["buildUpload"]["signedURL"].is_null(),
        "the used URL is dropped"
    );

    let image = target(&ns.name, "m", &md5);
    let s = wait_condition(&c, &ns.name, "Model", "m", "Complete", "JobComplete").await;
    assert_eq!(s["ready"], true);
    assert_eq!(condition(&s, "Built").0, "True");
    let m = api(&c, &ns.name, "Model").get("m").await.unwrap();
    assert_eq!(m.data["spec"]["image"], image.as_str());

    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let build = jobs.get("m-model-bld").await.expect("the build Job");
    let pod = build.spec.unwrap().template;
    let labels = pod.metadata.unwrap().labels.unwrap();
    assert_eq!(
        (labels["model"].as_str(), labels["role"].as_str()),
        ("m", "build")
    );
    let spec = pod.spec.unwrap();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("container-builder")
    );
    let args = spec.containers[0].args.clone().unwrap();
    assert!(args.contains(&format!("--destination={image}")), "{args:?}");
    assert!(args.contains(&"--context=tar:///upload/latest.tar.gz".to_owned()));
    let run = jobs.get("m-modeller").await.expect("the model Job");
    assert_eq!(
        run.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some(image.as_str())
    );
    let all = jobs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2, "one build Job and one run Job");
}

#[tokio::test]
async fn stored_bytes_that_do_not_match_are_refused_and_named() {
    let ns = TestNamespace::new("bld-mm");
    let c = client().await;
    let s3 = s3();
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let bytes = context("declared");
    let md5 = md5_hex(&bytes);
    create_upload_model(&c, &ns.name, "m", &md5, "r1").await;
    wait_url(&c, &ns.name, "m", "r1", "").await;
    // Some other writer put other bytes where the upload belongs.
    let key = format!(
        "{}/uploads/latest.tar.gz",
        substratus_core::names::storage_prefix(
            "test",
            &ns.name,
            substratus_core::names::Kind::Model,
            "m"
        )
    );
    let path = s3.object_path(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let other = context("other");
    std::fs::write(&path, &other).unwrap();
    poke(&c, &ns.name, "Model", "m").await;
    let s = wait_condition(&c, &ns.name, "Model", "m", "Uploaded", "UploadMismatch").await;
    let (_, _, message) = condition(&s, "Uploaded");
    assert!(
        message.contains(&md5) && message.contains(&md5_hex(&other)),
        "{message}"
    );
    assert_eq!(condition(&s, "Ready").1, "UploadMismatch");
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    assert!(
        jobs.get_opt("m-model-bld").await.unwrap().is_none(),
        "nothing is built"
    );
    // The right bytes through the URL (still valid) fix it.
    let url = wait_url(&c, &ns.name, "m", "r1", "").await;
    assert_eq!(put(&url, bytes, &md5).await, 200);
    poke(&c, &ns.name, "Model", "m").await;
    wait_condition(&c, &ns.name, "Model", "m", "Uploaded", "UploadFound").await;
}

#[tokio::test]
async fn an_expired_url_is_refused_by_storage_and_replaced() {
    let ns = TestNamespace::new("bld-exp");
    let c = client().await;
    let s3 = s3();
    let settings = BuildSettings {
        upload_url_ttl: Duration::from_secs(3),
        ..Default::default()
    };
    let _op = RunningOperator::start_with(&ns.name, kind_cloud_on("kind", &s3), settings).await;
    let bytes = context("late");
    let md5 = md5_hex(&bytes);
    create_upload_model(&c, &ns.name, "m", &md5, "r1").await;
    let first = wait_url(&c, &ns.name, "m", "r1", "").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        put(&first, bytes.clone(), &md5).await >= 400,
        "an expired URL works no more"
    );
    // The controller renewed it when it expired.
    let second = wait_url(&c, &ns.name, "m", "r1", &first).await;
    assert_eq!(put(&second, bytes, &md5).await, 200);
    poke(&c, &ns.name, "Model", "m").await;
    wait_condition(&c, &ns.name, "Model", "m", "Uploaded", "UploadFound").await;
}

/// Puts `bytes` where `name`'s upload belongs, as an earlier object of that name did.
async fn store_upload(s3: &S3Server, ns: &str, name: &str, bytes: &[u8]) {
    let cloud = kind_cloud_on("kind", s3);
    let key = format!(
        "{}/uploads/latest.tar.gz",
        substratus_core::names::storage_prefix(
            "test",
            ns,
            substratus_core::names::Kind::Model,
            name
        )
    );
    let md5 = md5_hex(bytes);
    let url = cloud
        .signed_upload_url(&key, &md5, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(put(&url.url, bytes.to_vec(), &md5).await, 200);
}

#[tokio::test]
async fn an_upload_already_in_storage_is_reused_without_a_url() {
    let ns = TestNamespace::new("bld-reuse");
    let c = client().await;
    let s3 = s3();
    let bytes = context("kept");
    let md5 = md5_hex(&bytes);
    store_upload(&s3, &ns.name, "m", &bytes).await;
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    create_upload_model(&c, &ns.name, "m", &md5, "r9").await;
    let s = wait_condition(&c, &ns.name, "Model", "m", "Complete", "JobComplete").await;
    let (status, reason, message) = condition(&s, "Uploaded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "UploadFound"));
    assert!(message.contains("reused"), "{message}");
    assert!(s["buildUpload"]["signedURL"].is_null());
}

#[tokio::test]
async fn a_failed_build_says_why_and_a_new_request_retries_it() {
    let ns = TestNamespace::new("bld-fail");
    let c = client().await;
    let s3 = s3();
    let bytes = context("breaks");
    let md5 = md5_hex(&bytes);
    store_upload(&s3, &ns.name, "m", &bytes).await;
    // The simulated nodes fail pods of this image.
    let settings = BuildSettings {
        builder_image: "sim.substratus.ai/fail".into(),
        ..Default::default()
    };
    let _op = RunningOperator::start_with(&ns.name, kind_cloud_on("kind", &s3), settings).await;
    create_upload_model(&c, &ns.name, "m", &md5, "r1").await;
    let s = wait_condition(&c, &ns.name, "Model", "m", "Built", "BuildFailed").await;
    let (_, _, message) = condition(&s, "Built");
    assert!(message.contains("m-model-bld"), "{message}");
    assert!(
        message.contains("requestID"),
        "says how to retry: {message}"
    );
    assert_eq!(condition(&s, "Ready").1, "BuildFailed");
    assert_eq!(s["ready"], false);
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let first = jobs.get("m-model-bld").await.unwrap().metadata.uid;
    // Left alone, a failed build is not retried in a loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(jobs.get("m-model-bld").await.unwrap().metadata.uid, first);

    let patch = json!({"spec": {"build": {"upload": {"md5Checksum": md5, "requestID": "r2"}}}});
    api(&c, &ns.name, "Model")
        .patch("m", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("a new build Job for the new request", WAIT, || async {
        match jobs
            .get_opt("m-model-bld")
            .await
            .map_err(|e| e.to_string())?
        {
            Some(j) if j.metadata.uid != first => Ok(Some(())),
            other => Err(format!("{:?}", other.map(|j| j.metadata.uid))),
        }
    })
    .await;
}

#[tokio::test]
async fn a_git_build_clones_then_builds_and_a_new_tag_rebuilds() {
    let ns = TestNamespace::new("bld-git");
    let c = client().await;
    let s3 = s3();
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let git = json!({"git": {"url": "https://github.com/substratusai/images", "path": "model-loader-huggingface", "tag": "v1"}});
    create(&c, &ns.name, model("g", git.clone())).await;
    let s = wait_condition(&c, &ns.name, "Model", "g", "Complete", "JobComplete").await;
    assert!(s["buildUpload"].is_null(), "no upload for git builds");
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let build = jobs.get("g-model-bld").await.unwrap();
    let spec = build.spec.unwrap().template.spec.unwrap();
    let clone = &spec.init_containers.unwrap()[0];
    assert_eq!(
        clone.args.clone().unwrap(),
        [
            "clone",
            "--depth=1",
            "--branch=v1",
            "--",
            "https://github.com/substratusai/images",
            "/workspace"
        ]
    );
    let args = spec.containers[0].args.clone().unwrap();
    assert!(args.contains(&"--context-sub-path=model-loader-huggingface".to_owned()));
    let m = api(&c, &ns.name, "Model").get("g").await.unwrap();
    assert_eq!(
        m.data["spec"]["image"],
        target(&ns.name, "g", &tag_of(&git)).as_str()
    );

    // A new tag: the old image is not run while the new one builds, then the Model re-runs.
    let patch = json!({"spec": {"build": {"git": {"url": "https://github.com/substratusai/images", "tag": "v2"}}}});
    let v2 = tag_of(
        &json!({"git": {"url": "https://github.com/substratusai/images",
        "path": "model-loader-huggingface", "tag": "v2"}}),
    );
    api(&c, &ns.name, "Model")
        .patch("g", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "the v2 image in spec.image and the Model Ready",
        WAIT,
        || async {
            let m = api(&c, &ns.name, "Model")
                .get("g")
                .await
                .map_err(|e| e.to_string())?;
            let image = m.data["spec"]["image"].as_str().unwrap_or("").to_owned();
            let ready = m.data["status"]["ready"] == true;
            if image == target(&ns.name, "g", &v2) && ready {
                Ok(Some(()))
            } else {
                Err(format!("image {image}, ready {ready}"))
            }
        },
    )
    .await;
    let run = jobs.get("g-modeller").await.unwrap();
    assert_eq!(
        run.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some(target(&ns.name, "g", &v2).as_str())
    );
}

#[tokio::test]
async fn storage_down_during_md5_verification_waits_and_loses_nothing() {
    let ns = TestNamespace::new("bld-s3down");
    let c = client().await;
    let mut s3 = s3();
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let bytes = context("survives");
    let md5 = md5_hex(&bytes);
    create_upload_model(&c, &ns.name, "m", &md5, "r1").await;
    let url = wait_url(&c, &ns.name, "m", "r1", "").await;
    assert_eq!(put(&url, bytes, &md5).await, 200);
    // Storage goes down before the controller reads the upload back.
    s3.pause();
    poke(&c, &ns.name, "Model", "m").await;
    let s = wait_condition(&c, &ns.name, "Model", "m", "Uploaded", "CloudError").await;
    let (_, _, message) = condition(&s, "Uploaded");
    assert!(
        message.contains("cannot read the upload from storage"),
        "{message}"
    );
    assert_eq!(
        s["buildUpload"]["signedURL"].as_str(),
        Some(url.as_str()),
        "the URL is kept"
    );
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    assert!(
        jobs.get_opt("m-model-bld").await.unwrap().is_none(),
        "nothing is built unverified"
    );
    // Back up: verified, built, run; the upload was not lost.
    s3.resume().unwrap();
    let s = wait_condition(&c, &ns.name, "Model", "m", "Complete", "JobComplete").await;
    assert_eq!(s["buildUpload"]["storedMD5Checksum"], md5.as_str());
}

#[tokio::test]
async fn an_operator_killed_mid_build_resumes_without_a_second_build_job() {
    let ns = TestNamespace::new("bld-kill");
    let c = client().await;
    let s3 = s3();
    let bytes = context("killed");
    let md5 = md5_hex(&bytes);
    store_upload(&s3, &ns.name, "m", &bytes).await;
    let op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    create_upload_model(&c, &ns.name, "m", &md5, "r1").await;
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let first = wait_for("the build Job", WAIT, || async {
        Ok(jobs
            .get_opt("m-model-bld")
            .await
            .map_err(|e| e.to_string())?
            .and_then(|j| j.metadata.uid))
    })
    .await;
    op.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let s = wait_condition(&c, &ns.name, "Model", "m", "Complete", "JobComplete").await;
    assert_eq!(condition(&s, "Built").0, "True");
    let build = jobs.get("m-model-bld").await.unwrap();
    assert_eq!(
        build.metadata.uid,
        Some(first),
        "the build Job was not replaced"
    );
    let all = jobs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2, "one build Job, one run Job");
}
