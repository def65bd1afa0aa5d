//! `sub run` against the real control plane, the operator (kind backend) and a real S3
//! server: pack, upload through the signed URL, build, run, Ready; `.dockerignore`; an
//! unchanged directory is not uploaded again; a tampered archive is refused and says so; an
//! expired URL is replaced.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use substratus_cli::manifest::Kind;
use substratus_cli::{archive, objects};
use substratus_core::plan::build::BuildSettings;
use substratus_devcluster::s3::S3Server;
use substratus_tests::cluster::{TestNamespace, client, shared, wait_for};
use substratus_tests::kubelet;
use substratus_tests::operator::{RunningOperator, kind_cloud_on};

fn write(dir: &Path, rel: &str, body: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A model directory like the examples': Dockerfile, code, a manifest, and things to leave out.
fn project(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "Dockerfile",
        "FROM python:3.11-slim\nCOPY . /content/src\n",
    );
    write(d.path(), "src/train.py", "print('training')\n");
    write(d.path(), ".dockerignore", ".venv\n*.secret\n");
    write(d.path(), ".venv/lib/big.py", "x = 1\n");
    write(d.path(), "api.secret", "hunter2\n");
    write(
        d.path(),
        "model.yaml",
        &format!(
            "apiVersion: substratus.ai/v1\nkind: Model\nmetadata:\n  name: {name}\nspec:\n  command: [python, src/train.py]\n  params:\n    epochs: 1\n"
        ),
    );
    d
}

/// A project packed into a temporary file: (project, temp dir, archive).
fn packed_project(name: &str) -> (tempfile::TempDir, tempfile::TempDir, archive::Archive) {
    let dir = project(name);
    let tmp = tempfile::tempdir().unwrap();
    let packed = archive::pack(dir.path(), &tmp.path().join("c.tar.gz")).unwrap();
    (dir, tmp, packed)
}

/// Applies Model `name` as an upload build of `packed`, request `r1`.
async fn apply_upload(api: &Api<DynamicObject>, name: &str, packed: &archive::Archive) {
    let mut obj = serde_json::json!({
        "apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name},
        "spec": {"command": ["python", "src/train.py"]},
    });
    objects::set_upload(&mut obj, &packed.md5_hex, "r1");
    objects::apply(api, &obj, true).await.unwrap();
}

/// Waits until the object answers request `r1` with a URL.
async fn wait_for_url(api: &Api<DynamicObject>, name: &str, md5: &str) {
    wait_for("a URL for r1", Duration::from_secs(30), || async {
        let o = api.get(name).await.map_err(|e| e.to_string())?;
        Ok(matches!(
            objects::answer(&o, md5, "r1"),
            Some(objects::Answer::Url(_))
        )
        .then_some(()))
    })
    .await;
}

fn sub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sub"))
        .arg("--kubeconfig")
        .arg(&shared().kubeconfig)
        .args(args)
        .output()
        .expect("running sub")
}

fn upload_key(ns: &str, name: &str) -> String {
    format!(
        "{}/uploads/latest.tar.gz",
        substratus_core::names::storage_prefix(
            "test",
            ns,
            substratus_core::names::Kind::Model,
            name
        )
    )
}

fn stored_names(s3: &S3Server, key: &str) -> Vec<String> {
    let f = std::fs::File::open(s3.object_path(key)).expect("the stored upload");
    let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
    t.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn sub_run_uploads_builds_and_runs_to_ready_and_skips_an_unchanged_upload() {
    let ns = TestNamespace::new("sub-run");
    let s3 = S3Server::start(&shared().bin_dir, "substratus-artifacts").unwrap();
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let dir = project("trainer");
    let d = dir.path().to_str().unwrap();
    // What the simulated build and run containers print.
    let logs_dir = tempfile::tempdir().unwrap();
    let serving = tokio::spawn({
        let (c, ns, logs) = (client().await, ns.name.clone(), logs_dir.path().to_owned());
        async move {
            let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
            let mut served = std::collections::HashSet::new();
            loop {
                let list = pods
                    .list(&ListParams::default().labels("model=trainer"))
                    .await
                    .unwrap();
                for p in list.items {
                    let name = p.metadata.name.clone().unwrap();
                    if served.insert(name.clone()) {
                        let role = p.metadata.labels.unwrap()["role"].clone();
                        let line = format!("{role} step 1 of 1 done");
                        kubelet::serve_logs(&c, &ns, &name, &logs, &[&line]).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    let out = tokio::task::spawn_blocking({
        let (ns, d) = (ns.name.clone(), d.to_owned());
        move || sub(&["-n", &ns, "run", &d, "--timeout", "90s"])
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sub run failed:\n{err}");
    assert!(err.contains("✓ uploaded trainer"), "{err}");
    assert!(err.contains("Model trainer is Ready"), "{err}");
    assert!(
        err.contains("Uploaded: UploadFound"),
        "the live view shows conditions: {err}"
    );
    assert!(
        err.contains("[build] build step 1 of 1 done"),
        "build logs: {err}"
    );
    assert!(
        err.contains("[run] run step 1 of 1 done"),
        "run logs: {err}"
    );
    serving.abort();

    // What storage holds: the context minus .dockerignore'd paths, under the declared md5.
    let key = upload_key(&ns.name, "trainer");
    let names = stored_names(&s3, &key);
    assert!(
        names.contains(&"Dockerfile".to_owned()) && names.contains(&"src/train.py".to_owned()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains(".venv") || n.ends_with(".secret")),
        "{names:?}"
    );
    let mut bytes = Vec::new();
    std::fs::File::open(s3.object_path(&key))
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let c = client().await;
    let m = Api::<DynamicObject>::namespaced_with(c.clone(), &ns.name, &Kind::Model.api_resource())
        .get("trainer")
        .await
        .unwrap();
    let md5 = m.data["spec"]["build"]["upload"]["md5Checksum"]
        .as_str()
        .unwrap()
        .to_owned();
    use md5::Digest;
    assert_eq!(substratus_core::names::hex(&md5::Md5::digest(&bytes)), md5);
    assert!(
        m.data["spec"]["image"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{md5}"))
    );

    // Unchanged directory: same md5, already stored, not uploaded again; still Ready.
    let out = tokio::task::spawn_blocking({
        let (ns, d) = (ns.name.clone(), d.to_owned());
        move || sub(&["-n", &ns, "run", &d, "--timeout", "90s"])
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "second sub run failed:\n{err}");
    assert!(err.contains("already in storage, skipped"), "{err}");
    assert!(!err.contains("✓ uploaded"), "{err}");

    // sub get shows it.
    let out = tokio::task::spawn_blocking({
        let ns = ns.name.clone();
        move || sub(&["-n", &ns, "get", "models"])
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains("trainer") && l.split_whitespace().nth(2) == Some("True")),
        "{table}"
    );
}

#[tokio::test]
async fn a_tampered_archive_is_refused_and_says_so() {
    let ns = TestNamespace::new("sub-tamper");
    let s3 = S3Server::start(&shared().bin_dir, "substratus-artifacts").unwrap();
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let (_dir, _tmp, packed) = packed_project("t");
    let c = client().await;
    let api = objects::api(&c, Kind::Model, &ns.name);
    apply_upload(&api, "t", &packed).await;
    // The archive changes after its md5 was declared.
    let mut bytes = std::fs::read(&packed.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&packed.path, &bytes).unwrap();
    let err = objects::upload(&api, "t", &packed, "r1".into(), Duration::from_secs(30))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("storage refused the upload (HTTP 400)"),
        "{msg}"
    );
    assert!(
        msg.contains("BadDigest") || msg.contains("Content-MD5") || msg.contains("md5"),
        "{msg}"
    );
    assert!(
        !s3.object_path(&upload_key(&ns.name, "t")).exists(),
        "nothing stored"
    );
}

#[tokio::test]
async fn an_expired_url_is_replaced_by_the_client() {
    let ns = TestNamespace::new("sub-exp");
    let s3 = S3Server::start(&shared().bin_dir, "substratus-artifacts").unwrap();
    let settings = BuildSettings {
        upload_url_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    let op =
        RunningOperator::start_with(&ns.name, kind_cloud_on("kind", &s3), settings.clone()).await;
    let (_dir, _tmp, packed) = packed_project("e");
    let c = client().await;
    let api = objects::api(&c, Kind::Model, &ns.name);
    apply_upload(&api, "e", &packed).await;
    wait_for_url(&api, "e", &packed.md5_hex).await;
    // The operator goes away; its URL expires.
    op.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let upload = tokio::spawn({
        let (api, packed) = (
            api.clone(),
            archive::Archive {
                path: packed.path.clone(),
                md5_hex: packed.md5_hex.clone(),
                size: packed.size,
                entries: packed.entries,
            },
        );
        async move { objects::upload(&api, "e", &packed, "r1".into(), Duration::from_secs(60)).await }
    });
    // The client asks for a fresh URL with a new request id...
    let renewed = wait_for(
        "a new requestID from the client",
        Duration::from_secs(20),
        || async {
            let o = api.get("e").await.map_err(|e| e.to_string())?;
            let r = o.data["spec"]["build"]["upload"]["requestID"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            Ok((r != "r1").then_some(r))
        },
    )
    .await;
    assert_eq!(renewed.len(), 32);
    // ... which the operator, back, answers; the upload then succeeds.
    let _op = RunningOperator::start_with(
        &ns.name,
        kind_cloud_on("kind", &s3),
        BuildSettings::default(),
    )
    .await;
    let uploaded = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(uploaded);
    assert!(s3.object_path(&upload_key(&ns.name, "e")).exists());
}

#[tokio::test]
async fn an_upload_survives_storage_going_down_and_coming_back() {
    let ns = TestNamespace::new("sub-s3down");
    let mut s3 = S3Server::start(&shared().bin_dir, "substratus-artifacts").unwrap();
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let (_dir, _tmp, packed) = packed_project("d");
    let c = client().await;
    let api = objects::api(&c, Kind::Model, &ns.name);
    apply_upload(&api, "d", &packed).await;
    wait_for_url(&api, "d", &packed.md5_hex).await;
    // Storage is down when the PUT starts; the client retries with backoff.
    s3.pause();
    let upload = tokio::spawn({
        let api = api.clone();
        let packed = archive::Archive {
            path: packed.path.clone(),
            md5_hex: packed.md5_hex.clone(),
            size: packed.size,
            entries: packed.entries,
        };
        async move { objects::upload(&api, "d", &packed, "r1".into(), Duration::from_secs(60)).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !upload.is_finished(),
        "the client keeps trying while storage is down"
    );
    s3.resume().unwrap();
    let uploaded = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(uploaded);
    let md5 = packed.md5_hex.clone();
    wait_for("the upload verified", Duration::from_secs(60), || async {
        let o = api.get("d").await.map_err(|e| e.to_string())?;
        let stored = o.data["status"]["buildUpload"]["storedMD5Checksum"].clone();
        Ok((stored == md5.as_str()).then_some(()))
    })
    .await;
}

#[tokio::test]
async fn kubectl_applybuild_applies_and_uploads_a_dataset() {
    let ns = TestNamespace::new("applybuild");
    let s3 = S3Server::start(&shared().bin_dir, "substratus-artifacts").unwrap();
    let _op = RunningOperator::start(&ns.name, kind_cloud_on("kind", &s3)).await;
    let dir = project("unused");
    let manifest = dir.path().join("dataset.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: substratus.ai/v1\nkind: Dataset\nmetadata:\n  name: squad\nspec:\n  image: loader\n",
    )
    .unwrap();
    let out = tokio::task::spawn_blocking({
        let (ns, d, m) = (
            ns.name.clone(),
            dir.path().to_owned(),
            manifest.display().to_string(),
        );
        move || {
            Command::new(env!("CARGO_BIN_EXE_kubectl-applybuild"))
                .arg("--kubeconfig")
                .arg(&shared().kubeconfig)
                .args(["-n", &ns, "-f", &m])
                .arg(&d)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("✓ uploaded squad"), "{err}");
    let c = client().await;
    let api = objects::api(&c, Kind::Dataset, &ns.name);
    wait_for(
        "the Dataset built and Ready",
        Duration::from_secs(60),
        || async {
            let o = api.get("squad").await.map_err(|e| e.to_string())?;
            let image = o.data["spec"]["image"].as_str().unwrap_or("").to_owned();
            let built = image.starts_with("registry.test:5000/test-dataset-");
            Ok((built && objects::is_ready(&o)).then_some(()))
        },
    )
    .await;
}
