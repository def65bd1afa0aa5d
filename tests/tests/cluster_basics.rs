//! The simulated cluster is real: the API server validates our CRDs, the controller manager
//! runs Jobs and Deployments, and the scheduler places GPU pods on the right node pools.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use substratus_tests::cluster::{TestNamespace, client, wait_for};
use substratus_tests::manifests::{corpus_dir, documents, yaml_files};

const WAIT: Duration = Duration::from_secs(60);

/// Creates `obj` and returns the API server's refusal message (panics if it was accepted).
async fn rejection(client: &kube::Client, ns: &str, obj: Value) -> String {
    let kind = obj["kind"].as_str().unwrap().to_owned();
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    match substratus_tests::objects::api(client, ns, &kind)
        .create(&PostParams::default(), &obj)
        .await
    {
        Ok(_) => panic!("the API server accepted an invalid {kind}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn model(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_the_field_named() {
    let ns = TestNamespace::new("invalid");
    let c = client().await;
    let cases = [
        (
            model("empty-build", json!({"build": {}})),
            "spec.build must set exactly one of spec.build.git or spec.build.upload",
        ),
        (
            model(
                "both-builds",
                json!({"build": {"git": {"url": "u"}, "upload": {"md5Checksum": "0123456789abcdef0123456789abcdef", "requestID": "r"}}}),
            ),
            "spec.build must set exactly one",
        ),
        (
            model("no-image", json!({"params": {"a": 1}})),
            "spec.image or spec.build must be set",
        ),
        (
            model(
                "password-in-url",
                json!({"build": {"git": {"url": "https://bot:ghp_secret@github.com/org/private"}}}),
            ),
            "spec.build.git.url must not hold credentials",
        ),
        (
            model(
                "token-in-url",
                json!({"build": {"git": {"url": "https://ghp_secret@github.com/org/private"}}}),
            ),
            "spec.build.git.credentialsSecret",
        ),
        (
            model(
                "bad-md5",
                json!({"build": {"upload": {"md5Checksum": "not-hex", "requestID": "1"}}}),
            ),
            "spec.build.upload.md5Checksum",
        ),
        (
            model(
                "bad-gpu",
                json!({"image": "i", "resources": {"gpu": {"type": "nvidia-v100", "count": 1}}}),
            ),
            "spec.resources.gpu.type",
        ),
        (
            model(
                "gpu-no-count",
                json!({"image": "i", "resources": {"gpu": {"type": "nvidia-l4"}}}),
            ),
            "spec.resources.gpu.count is required",
        ),
        (
            model(
                "too-many-gpus",
                json!({"image": "i", "resources": {"gpu": {"count": 17}}}),
            ),
            "spec.resources.gpu.count",
        ),
        (
            model(
                "negative-memory",
                json!({"image": "i", "resources": {"memory": -1}}),
            ),
            "spec.resources.memory",
        ),
        (
            model(&"m".repeat(51), json!({"image": "i"})),
            "metadata.name of a Model must be at most 50 characters",
        ),
        (
            json!({"apiVersion": "substratus.ai/v1", "kind": "Server", "metadata": {"name": "s"}, "spec": {"image": "i"}}),
            "spec.model.name is required",
        ),
        (
            json!({"apiVersion": "substratus.ai/v1", "kind": "Server", "metadata": {"name": "s2"},
                   "spec": {"image": "i", "model": {"name": "a"}, "modelName": "b"}}),
            "spec.modelName is a legacy alias",
        ),
        (
            json!({"apiVersion": "substratus.ai/v1", "kind": "Notebook", "metadata": {"name": "n".repeat(48)}, "spec": {"image": "i"}}),
            "metadata.name of a Notebook must be at most 47",
        ),
    ];
    for (obj, expected) in cases {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let msg = rejection(&c, &ns.name, obj).await;
        assert!(
            msg.contains(expected),
            "{name}: expected {expected:?} in {msg:?}"
        );
    }
}

#[tokio::test]
async fn every_corpus_manifest_and_example_is_accepted_by_the_api_server() {
    let ns = TestNamespace::new("compat");
    let c = client().await;
    let mut files = yaml_files(&corpus_dir());
    files.extend(yaml_files(
        &substratus_tests::manifests::repo_root().join("examples"),
    ));
    let mut count = 0;
    for file in files {
        for mut doc in documents(&file).unwrap() {
            doc["metadata"]["namespace"] = json!(ns.name);
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
            let pp = PostParams {
                dry_run: true,
                ..Default::default()
            };
            substratus_tests::objects::api(&c, &ns.name, &kind)
                .create(&pp, &obj)
                .await
                .unwrap_or_else(|e| panic!("{} was refused: {e}", file.display()));
            count += 1;
        }
    }
    assert!(count >= 25, "only {count} manifests checked");
}

#[tokio::test]
async fn a_job_runs_to_completion() {
    let ns = TestNamespace::new("job");
    let jobs: Api<Job> = Api::namespaced(client().await, &ns.name);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]
        }}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    wait_for("the Job to complete", WAIT, || async {
        let j = jobs.get("hello").await.map_err(|e| e.to_string())?;
        Ok(j.status.and_then(|s| s.succeeded).filter(|n| *n >= 1))
    })
    .await;
}

#[tokio::test]
async fn a_pod_marked_to_fail_fails_its_job_with_a_message() {
    let ns = TestNamespace::new("fail");
    let jobs: Api<Job> = Api::namespaced(client().await, &ns.name);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "doomed"},
        "spec": {"backoffLimit": 0, "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox",
                "env": [{"name": "SIM_FAIL", "value": "true"}]}]}
        }}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let failed = wait_for("the Job to fail", WAIT, || async {
        let j = jobs.get("doomed").await.map_err(|e| e.to_string())?;
        Ok(j.status.and_then(|s| s.conditions).and_then(|cs| {
            cs.into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
        }))
    })
    .await;
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    let status = jobs.get("doomed").await.unwrap().status.unwrap();
    assert_eq!(status.succeeded.unwrap_or(0), 0);
}

#[tokio::test]
async fn a_pod_annotated_with_a_duration_runs_that_long() {
    let ns = TestNamespace::new("slow");
    let jobs: Api<Job> = Api::namespaced(client().await, &ns.name);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "slow"},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"sim.substratus.ai/duration": "4s"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}
        }}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let status = wait_for("the slow Job to complete", WAIT, || async {
        let j = jobs.get("slow").await.map_err(|e| e.to_string())?;
        Ok(j.status.filter(|s| s.succeeded.unwrap_or(0) >= 1))
    })
    .await;
    let ran =
        status.completion_time.unwrap().0.as_second() - status.start_time.unwrap().0.as_second();
    assert!(
        ran >= 4,
        "the Job ran {ran}s, not the 4s its pod was annotated with"
    );
}

#[tokio::test]
async fn a_deployment_becomes_available() {
    let ns = TestNamespace::new("deploy");
    let deploys: Api<Deployment> = Api::namespaced(client().await, &ns.name);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    wait_for(
        "the Deployment to be Available with 2 ready replicas",
        WAIT,
        || async {
            let d = deploys.get("web").await.map_err(|e| e.to_string())?;
            let s = d.status.unwrap_or_default();
            let available = s
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            Ok((available && s.ready_replicas == Some(2)).then_some(()))
        },
    )
    .await;
}

fn gpu_pod(name: &str, selector: Value, gpus: u32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": selector,
            "containers": [{"name": "main", "image": "busybox", "resources": {
                "limits": {"nvidia.com/gpu": gpus.to_string()},
                "requests": {"nvidia.com/gpu": gpus.to_string()}
            }}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn four_l4_gpus_land_on_the_gke_l4_pool() {
    let ns = TestNamespace::new("l4");
    let c = client().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let pod = gpu_pod(
        "l4",
        json!({"cloud.google.com/gke-accelerator": "nvidia-l4"}),
        4,
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let node_name = wait_for("the L4 pod to be scheduled and running", WAIT, || async {
        let p = pods.get("l4").await.map_err(|e| e.to_string())?;
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        Ok(running.then(|| p.spec.and_then(|s| s.node_name)).flatten())
    })
    .await;
    let node = Api::<Node>::all(c).get(&node_name).await.unwrap();
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["cloud.google.com/gke-accelerator"], "nvidia-l4");
    assert_eq!(labels["node.kubernetes.io/instance-type"], "g2-standard-48");
    // GKE's GPU taint is tolerated because the pod asks for nvidia.com/gpu.
    let tolerations = pods
        .get("l4")
        .await
        .unwrap()
        .spec
        .unwrap()
        .tolerations
        .unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("nvidia.com/gpu"))
    );
}

async fn assert_unschedulable(pods: &Api<Pod>, name: &str) -> String {
    let cond = wait_for(
        "the scheduler to report the pod Unschedulable",
        WAIT,
        || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            let status = p.status.unwrap_or_default();
            Ok(status.conditions.unwrap_or_default().into_iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            }))
        },
    )
    .await;
    let p = pods.get(name).await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(p.spec.unwrap().node_name.is_none());
    cond.message.unwrap_or_default()
}

#[tokio::test]
async fn gpus_a_pool_cannot_hold_stay_pending_as_unschedulable() {
    let ns = TestNamespace::new("full");
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    // The GKE A100 pool has one node with one GPU: two do not fit.
    pods.create(
        &PostParams::default(),
        &gpu_pod(
            "a100-full",
            json!({"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}),
            2,
        ),
    )
    .await
    .unwrap();
    let msg = assert_unschedulable(&pods, "a100-full").await;
    assert!(msg.contains("nvidia.com/gpu"), "{msg}");
    // The GKE profile has no H100 pool at all.
    pods.create(
        &PostParams::default(),
        &gpu_pod(
            "h100-absent",
            json!({"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}),
            1,
        ),
    )
    .await
    .unwrap();
    let msg = assert_unschedulable(&pods, "h100-absent").await;
    assert!(msg.contains("node affinity/selector"), "{msg}");
}

#[tokio::test]
async fn azure_gpu_pools_need_the_sku_toleration() {
    let ns = TestNamespace::new("aks");
    let pods: Api<Pod> = Api::namespaced(client().await, &ns.name);
    let selector = json!({"kubernetes.azure.com/agentpool": "t4"});
    pods.create(
        &PostParams::default(),
        &gpu_pod("untolerated", selector.clone(), 1),
    )
    .await
    .unwrap();
    let msg = assert_unschedulable(&pods, "untolerated").await;
    assert!(msg.contains("untolerated taint"), "{msg}");

    let mut tolerated = gpu_pod("tolerated", selector, 1);
    tolerated.spec.as_mut().unwrap().tolerations = Some(vec![
        serde_json::from_value(
            json!({"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}),
        )
        .unwrap(),
    ]);
    pods.create(&PostParams::default(), &tolerated)
        .await
        .unwrap();
    wait_for("the tolerated pod to run on aks-t4", WAIT, || async {
        let p = pods.get("tolerated").await.map_err(|e| e.to_string())?;
        Ok(p.spec
            .and_then(|s| s.node_name)
            .filter(|n| n.starts_with("aks-t4-")))
    })
    .await;
}

/// A local HTTP server answering every request with `body`.
async fn http_server(body: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn simulated_pods_serve_logs_exec_and_port_forward_through_the_api_server() {
    use futures::AsyncBufReadExt;
    use futures::StreamExt;
    use substratus_tests::kubelet;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ns = TestNamespace::new("kubelet");
    let c = client().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}],
                 "tolerations": [{"operator": "Exists"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for("pod p running", WAIT, || async {
        let p = pods.get("p").await.map_err(|e| e.to_string())?;
        let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
        Ok((phase == "Running").then_some(()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();

    kubelet::serve_logs(
        &c,
        &ns.name,
        "p",
        dir.path(),
        &["first line", "second line"],
    )
    .await;
    let logs = wait_for("the pod's logs", WAIT, || async {
        pods.logs("p", &Default::default())
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(logs, "first line\nsecond line\n");
    let mut lines = pods
        .log_stream("p", &Default::default())
        .await
        .unwrap()
        .lines();
    assert_eq!(lines.next().await.unwrap().unwrap(), "first line");

    std::fs::write(dir.path().join("marker.txt"), "inside").unwrap();
    kubelet::serve_exec(&c, &ns.name, "p", dir.path()).await;
    let out = wait_for("exec in the pod", WAIT, || async {
        let mut p = pods
            .exec(
                "p",
                ["cat", "marker.txt"],
                &kube::api::AttachParams::default().stderr(false),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        p.stdout()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        p.join().await.map_err(|e| e.to_string())?;
        Ok((!out.is_empty()).then_some(out))
    })
    .await;
    assert_eq!(out, "inside");

    let local = http_server("hello from the pod").await;
    kubelet::serve_port(&c, &ns.name, "p", 8080, local).await;
    let body = wait_for("a port-forwarded request", WAIT, || async {
        let mut pf = pods
            .portforward("p", &[8080])
            .await
            .map_err(|e| e.to_string())?;
        let mut s = pf.take_stream(8080).ok_or("no stream")?;
        s.write_all(b"GET / HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        // The forwarded stream need not close when the server does: read what was asked.
        let mut resp = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            while !String::from_utf8_lossy(&resp).ends_with("hello from the pod") {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                resp.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| "no response within 10s".to_owned())?
            .map_err(|e| e.to_string())?;
        let resp = String::from_utf8_lossy(&resp).into_owned();
        Ok(resp.contains("200 OK").then_some(resp))
    })
    .await;
    assert!(body.ends_with("hello from the pod"), "{body}");
}

/// Sends `body` (the manifest's bytes, UTF-8 or not) to the API server as a create; returns
/// the refusal (status code, message).
async fn raw_create(c: &kube::Client, ns: &str, kind: &str, body: Vec<u8>) -> (u16, String) {
    let plural = format!("{}s", kind.to_lowercase());
    let req = http::Request::post(format!("/apis/substratus.ai/v1/namespaces/{ns}/{plural}"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    match c.request_text(req).await {
        Ok(text) => panic!("the API server accepted an invalid {kind}: {text}"),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn every_manifest_of_the_invalid_corpus_is_refused_with_its_field_named() {
    let ns = TestNamespace::new("corpus");
    let c = client().await;
    let dir = substratus_tests::manifests::repo_root().join("tests/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "the corpus has {} manifests",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let first = bytes.split(|b| *b == b'\n').next().unwrap();
        let expected = String::from_utf8_lossy(first)
            .strip_prefix("# expect: ")
            .unwrap_or_else(|| panic!("{}: no '# expect:' line", f.display()))
            .trim()
            .to_owned();
        let body: Vec<u8> = bytes.splitn(2, |b| *b == b'\n').nth(1).unwrap().to_vec();
        // The kind, read leniently (the bytes may not be UTF-8).
        let text = String::from_utf8_lossy(&body);
        let kind = ["Model", "Dataset", "Server", "Notebook"]
            .into_iter()
            .find(|k| text.contains(&format!("\"kind\": \"{k}\"")))
            .unwrap_or_else(|| panic!("{}: no kind", f.display()));
        let (code, message) = raw_create(&c, &ns.name, kind, body).await;
        if code != 422 || !message.contains(&expected) {
            failures.push(format!(
                "{}: HTTP {code}, expected {expected:?} in {message:?}",
                f.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
