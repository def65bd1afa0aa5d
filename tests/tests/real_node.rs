//! Cluster tests on the real node: real containers (containerd + runc) in the node's own
//! network namespace, from images built on this machine. Each step asserts what a container
//! saw, wrote or answered. The cluster is stopped at the end and the machine is checked for
//! anything the node left behind.
//!
//! Needs root and the node's Debian packages (`hack/install-node-deps.sh`); `hack/test.sh`
//! provides both. `SUBSTRATUS_SKIP_REAL_NODE=<reason>` skips these tests, saying why.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use substratus_devcluster::node;
use substratus_devcluster::s3::S3Server;
use substratus_tests::cluster::{self, TestNamespace, wait_for};
use substratus_tests::operator::{
    RunningOperator, csi_secret, kind_cloud_on_real_node, kind_cloud_on_real_node_by_namespace,
};

#[path = "real_node/cli.rs"]
mod cli;
#[path = "real_node/gateway.rs"]
mod gateway;
#[path = "real_node/workloads.rs"]
mod workloads;

/// What the machine holds that a real node could leave behind.
#[derive(Debug, PartialEq, Eq)]
struct MachineState {
    mounts: BTreeSet<String>,
    netns: BTreeSet<String>,
    host_iptables: BTreeSet<String>,
    node_cgroups: usize,
    node_processes: BTreeSet<String>,
    node_dirs: Vec<bool>,
}

fn lines(cmd: &str, args: &[&str]) -> BTreeSet<String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // iptables-save's comments carry a timestamp.
        .filter(|l| !l.starts_with('#'))
        // Packet counters change with any traffic.
        .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
        .collect()
}

impl MachineState {
    fn now() -> MachineState {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .collect();
        let netns = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let node_processes = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(node::ROOT) || c.contains(node::RUN))
            .collect();
        MachineState {
            mounts,
            netns,
            host_iptables: lines("iptables-save", &[]),
            node_cgroups: node::node_cgroups().len(),
            node_processes,
            node_dirs: [node::ROOT, node::RUN]
                .iter()
                .map(|d| Path::new(d).exists())
                .collect(),
        }
    }
}

/// Stops the cluster when dropped, also when a step panics.
struct StopCluster;

impl Drop for StopCluster {
    fn drop(&mut self) {
        if let Err(e) = cluster::stop() {
            eprintln!("stopping the test cluster: {e}");
        }
    }
}

fn kubectl_json(args: &[&str]) -> Result<Value, String> {
    let out = cluster::kubectl()
        .args(args)
        .args(["-o", "json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Deletes a namespace and waits (up to a minute) until its pods are gone, so that the
/// plugin has unpublished their volumes; a failure is left to the cluster's teardown.
fn delete_namespace(ns: &str) {
    kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=60s"]).ok();
}

fn kubectl(args: &[&str]) -> Result<String, String> {
    let out = cluster::kubectl()
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apply(value: &Value) {
    use std::io::Write;
    let mut child = cluster::kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn busybox() -> String {
    substratus_devcluster::recipes::busybox()
        .expect("the busybox image")
        .reference
}

fn pod(ns: &str, name: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": busybox(), "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", script]}],
        },
    })
}

/// Waits until the pod has ended and returns it.
async fn finished(ns: &str, name: &str) -> Value {
    wait_for(
        &format!("pod {ns}/{name} to finish"),
        Duration::from_secs(90),
        || async move {
            let p = kubectl_json(&["get", "pod", name, "-n", ns])?;
            let phase = p["status"]["phase"].as_str().unwrap_or_default().to_owned();
            Ok((phase == "Succeeded" || phase == "Failed").then_some(p))
        },
    )
    .await
}

async fn a_container_sees_its_spec_and_its_output_reaches_kubectl_logs(ns: &str) {
    apply(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": ns},
        "stringData": {"token": "s3cr3t-from-a-secret"}}));
    apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "params", "namespace": ns},
        "data": {"params.json": "{\"epochs\":3}"}}));
    let mut p = pod(
        ns,
        "contract",
        "echo \"uid=$(id -u) pwd=$(pwd) token=$TOKEN\"; cat /content/params.json; echo; \
         echo hi > /content/params.json 2>/dev/null && echo params-writable || echo params-read-only; \
         cat /etc/resolv.conf | grep -q 10.96.0.10 && echo dns-configured",
    );
    let c = &mut p["spec"]["containers"][0];
    c["workingDir"] = json!("/content");
    c["env"] = json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]);
    c["securityContext"] = json!({"runAsUser": 65532});
    c["volumeMounts"] = json!([{"name": "params", "mountPath": "/content/params.json",
                               "subPath": "params.json", "readOnly": true}]);
    p["spec"]["volumes"] = json!([{"name": "params", "configMap": {"name": "params"}}]);
    apply(&p);
    let done = finished(ns, "contract").await;
    assert_eq!(done["spec"]["nodeName"], node::NODE_NAME);
    assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
    let logs = kubectl(&["logs", "contract", "-n", ns]).expect("kubectl logs of a real pod");
    assert!(
        logs.contains("uid=65532 pwd=/content token=s3cr3t-from-a-secret"),
        "{logs}"
    );
    assert!(logs.contains("{\"epochs\":3}"), "{logs}");
    assert!(logs.contains("params-read-only"), "{logs}");
    assert!(logs.contains("dns-configured"), "{logs}");
}

async fn a_failing_container_fails_its_pod_with_its_message(ns: &str) {
    apply(&pod(
        ns,
        "fails",
        "echo 'the data set is empty' > /dev/termination-log; exit 3",
    ));
    let done = finished(ns, "fails").await;
    assert_eq!(done["status"]["phase"], "Failed", "{done:#}");
    let term = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 3, "{done:#}");
    assert_eq!(
        term["message"].as_str().map(str::trim),
        Some("the data set is empty")
    );
}

async fn pods_reach_the_api_server_through_its_service_and_cluster_dns(ns: &str) {
    apply(&pod(
        ns,
        "in-cluster",
        // busybox's nslookup has its own resolver; nc speaks plain HTTP to the API server's
        // TLS port, which Go's server answers with a message of its own.
        // (The last Address line of nslookup is the answer.)
        "out=$(nslookup kubernetes.default.svc.cluster.local 2>&1); echo \"$out\"; \
         ip=$(echo \"$out\" | awk '/^Address/ {a=$NF} END {print a}'); \
         printf 'GET /version HTTP/1.0\\r\\n\\r\\n' | nc -w 5 \"$ip\" 443",
    ));
    let done = finished(ns, "in-cluster").await;
    let logs = kubectl(&["logs", "in-cluster", "-n", ns]).unwrap_or_default();
    assert_eq!(done["status"]["phase"], "Succeeded", "{logs}");
    assert!(
        logs.contains(&node::KUBERNETES_SERVICE_IP.to_string()),
        "the cluster DNS did not resolve the API server's Service: {logs}"
    );
    assert!(
        logs.contains("Client sent an HTTP request to an HTTPS server"),
        "the API server did not answer through its Service: {logs}"
    );
}

async fn a_ready_http_server_is_reached_by_port_forward_and_exec(ns: &str) {
    let token = format!("served-{}", std::process::id());
    let mut p = pod(
        ns,
        "web",
        &format!(
            "mkdir -p /tmp/www && echo {token} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
        ),
    );
    p["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    p["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1});
    apply(&p);
    wait_for(
        "the web pod's readiness probe to pass",
        Duration::from_secs(90),
        || async {
            let p = kubectl_json(&["get", "pod", "web", "-n", ns])?;
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            Ok(ready.then_some(()))
        },
    )
    .await;
    let exec = kubectl(&["exec", "web", "-n", ns, "--", "cat", "/tmp/www/index.html"])
        .expect("kubectl exec into a real pod");
    assert_eq!(exec.trim(), token);

    let port = substratus_devcluster::ports::free_loopback_port().unwrap();
    let mut forward = cluster::kubectl()
        .args([
            "port-forward",
            "-n",
            ns,
            "pod/web",
            &format!("{port}:8080"),
            "--address=127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let body = cluster::poll_until(
        "an answer through kubectl port-forward",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                match reqwest::get(&url).await {
                    Ok(r) => Ok(Some(r.text().await.map_err(|e| e.to_string())?)),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(body.expect("port-forward").trim(), token);
}

/// Small requests: two of these fit the real node's cores at once.
fn small() -> Value {
    json!({"cpu": 1, "memory": 1, "disk": 1})
}

fn object(kind: &str, name: &str, ns: &str, spec: Value) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": kind,
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// Waits until the object's Ready condition has `status`; returns the object.
async fn until_ready(
    ns: &str,
    kind: &str,
    name: &str,
    status: &str,
    reason: Option<&str>,
) -> Value {
    let what = format!("{kind} {name} to be Ready={status} {reason:?}");
    let (kind, name, status) = (kind.to_owned(), name.to_owned(), status.to_owned());
    let reason = reason.map(str::to_owned);
    let waited = cluster::poll_until(&what, Duration::from_secs(150), || {
        let (kind, name, status, reason) =
            (kind.clone(), name.clone(), status.clone(), reason.clone());
        async move {
            let o = kubectl_json(&["get", &kind.to_lowercase(), &name, "-n", ns])?;
            let ready = o["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap_or(Value::Null);
            let seen = format!("{ready}");
            let matches = ready["status"] == status.as_str()
                && reason.as_deref().is_none_or(|r| ready["reason"] == r);
            if matches { Ok(Some(o)) } else { Err(seen) }
        }
    })
    .await;
    waited.unwrap_or_else(|e| panic!("{e}\n{}", what_the_namespace_shows(ns)))
}

/// The namespace's pods, their events and the end of each container's log: what a timed-out
/// wait needs to be understood from a CI log alone.
fn what_the_namespace_shows(ns: &str) -> String {
    let mut out = String::new();
    for args in [
        vec!["get", "pods", "-n", ns, "-o", "wide"],
        vec!["describe", "pods", "-n", ns],
        vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
    ] {
        let said = kubectl(&args).unwrap_or_else(|e| e);
        out += &format!("--- kubectl {}\n{said}\n", args.join(" "));
    }
    let pods = kubectl_json(&["get", "pods", "-n", ns]).unwrap_or_default();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let said = kubectl(&["logs", name, "-n", ns, "--all-containers", "--tail=30"])
            .unwrap_or_else(|e| e);
        out += &format!("--- logs of {name}\n{said}\n");
    }
    out
}

/// The bucket key prefix of an object (`status.artifacts.url` = `s3://bucket/<prefix>`).
fn prefix_of(o: &Value) -> String {
    let url = o["status"]["artifacts"]["url"]
        .as_str()
        .expect("status.artifacts.url");
    url.splitn(4, '/')
        .nth(3)
        .expect("a prefix in the URL")
        .to_owned()
}

fn stored(s3: &S3Server, key: &str) -> String {
    std::fs::read_to_string(s3.object_path(key))
        .unwrap_or_else(|e| panic!("{key} is not in the bucket: {e}"))
}

async fn a_model_job_sees_the_container_contract_and_its_artifacts_reach_the_bucket(
    ns: &str,
    s3: &S3Server,
) -> Value {
    apply(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hub", "namespace": ns},
        "stringData": {"token": "hub-token-from-a-secret"}}));
    apply(&object(
        "Model",
        "base",
        ns,
        json!({
            "image": busybox(),
            "command": ["sh", "-c", "set -e; pwd > /content/artifacts/workdir; cd /content/artifacts; \
                cp /content/params.json params.json; printf %s \"$TOKEN\" > token; \
                echo '<html>base model</html>' > index.html; echo '{\"jupyter\":\"busybox\"}' > api; \
                echo done"],
            "env": {"TOKEN": "${{ secrets.hub.token }}"},
            "params": {"epochs": 3, "prompt": "line one\nline two"},
            "resources": small(),
        }),
    ));
    let base = until_ready(ns, "Model", "base", "True", None).await;
    let p = prefix_of(&base);
    assert_eq!(
        stored(s3, &format!("{p}/artifacts/workdir")).trim(),
        "/content"
    );
    let params: Value =
        serde_json::from_str(&stored(s3, &format!("{p}/artifacts/params.json"))).unwrap();
    assert_eq!(params, json!({"epochs": 3, "prompt": "line one\nline two"}));
    assert_eq!(
        stored(s3, &format!("{p}/artifacts/token")),
        "hub-token-from-a-secret"
    );
    base
}

async fn a_fine_tune_reads_its_base_model_read_only(ns: &str, s3: &S3Server, base: &Value) {
    apply(&object(
        "Model",
        "tuned",
        ns,
        json!({
            "image": busybox(),
            "model": {"name": "base"},
            "command": ["sh", "-c", "cat /content/model/token > /content/artifacts/base-token; \
                if touch /content/model/intruder 2>/dev/null; then echo writable; else echo read-only; fi \
                > /content/artifacts/model-access"],
            "resources": small(),
        }),
    ));
    let tuned = until_ready(ns, "Model", "tuned", "True", None).await;
    let p = prefix_of(&tuned);
    assert_eq!(
        stored(s3, &format!("{p}/artifacts/base-token")),
        "hub-token-from-a-secret"
    );
    assert_eq!(
        stored(s3, &format!("{p}/artifacts/model-access")).trim(),
        "read-only"
    );
    let base_prefix = prefix_of(base);
    assert!(
        !s3.object_path(&format!("{base_prefix}/artifacts/intruder"))
            .exists(),
        "the fine-tune wrote into its base model"
    );
}

/// A pod of another namespace given the very volume the operator mounts `base` with (an
/// inline volume naming Model `base`) gets the prefix of Model `base` of its own namespace:
/// it sees none of the files of `ns`'s Model, and what it writes lands in its own prefix.
async fn an_inline_volume_naming_another_namespace_s_model_mounts_the_pod_s_own(
    ns: &str,
    s3: &S3Server,
    base: &Value,
) {
    let cloud = kind_cloud_on_real_node(s3);
    let model = substratus_core::plan::Parent {
        kind: substratus_core::names::Kind::Model,
        name: "base".into(),
        namespace: ns.into(),
        uid: base["metadata"]["uid"].as_str().unwrap_or_default().into(),
        generation: None,
    };
    let folder =
        substratus_core::plan::storage::artifact_prefix(&model, cloud.as_ref()).artifacts();
    let mut volume = serde_json::to_value(
        cloud
            .bucket_volume(&folder, substratus_core::cloud::Access::ReadWrite)
            .unwrap()
            .volume,
    )
    .unwrap();
    assert!(volume["csi"]["volumeAttributes"].is_object(), "{volume}");
    volume["name"] = json!("stolen");
    let other = TestNamespace::new("other-tenant");
    let mut p = pod(
        &other.name,
        "borrower",
        "echo \"entries=$(ls -A /stolen | wc -l)\"; echo mine > /stolen/from-other-tenant",
    );
    p["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "stolen", "mountPath": "/stolen"}]);
    p["spec"]["volumes"] = json!([volume]);
    apply(&p);
    let done = finished(&other.name, "borrower").await;
    let logs = kubectl(&["logs", "borrower", "-n", &other.name]).unwrap_or_default();
    assert_eq!(done["status"]["phase"], "Succeeded", "{logs}");
    assert!(logs.contains("entries=0"), "{logs}");
    let own = substratus_core::names::storage_prefix(
        &cloud.config().cluster_name,
        &other.name,
        substratus_core::names::Kind::Model,
        "base",
    );
    wait_for(
        "the other tenant's file in its own prefix",
        Duration::from_secs(30),
        || {
            let path = s3.object_path(&format!("{own}/artifacts/from-other-tenant"));
            async move { Ok::<_, String>(path.exists().then_some(())) }
        },
    )
    .await;
    let base_prefix = prefix_of(base);
    assert!(
        !s3.object_path(&format!("{base_prefix}/artifacts/from-other-tenant"))
            .exists(),
        "a pod of another namespace wrote into {ns}'s Model"
    );
    delete_namespace(&other.name);
}

/// `kubectl port-forward` to `target` and a GET of `path` through it.
async fn get_through_port_forward(ns: &str, target: &str, remote: u16, path: &str) -> String {
    let port = substratus_devcluster::ports::free_loopback_port().unwrap();
    let mut forward = cluster::kubectl()
        .args([
            "port-forward",
            "-n",
            ns,
            target,
            &format!("{port}:{remote}"),
            "--address=127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}{path}");
    let body = cluster::poll_until(
        &format!("an answer from {target} through kubectl port-forward"),
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                match reqwest::get(&url).await {
                    Ok(r) if r.status().is_success() => {
                        Ok(Some(r.text().await.map_err(|e| e.to_string())?))
                    }
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
    let _ = forward.kill();
    let _ = forward.wait();
    body.unwrap_or_else(|e| panic!("{e}"))
}

async fn a_server_is_ready_once_its_http_server_answers(ns: &str) {
    apply(&object(
        "Server",
        "srv",
        ns,
        json!({
            "image": busybox(),
            "model": {"name": "base"},
            "command": ["httpd", "-f", "-p", "8080", "-h", "/content/model"],
            "resources": small(),
        }),
    ));
    until_ready(ns, "Server", "srv", "True", None).await;
    let body = get_through_port_forward(ns, "service/srv-server", 8080, "/").await;
    assert_eq!(body.trim(), "<html>base model</html>");
    kubectl(&["delete", "server", "srv", "-n", ns, "--wait=true"]).unwrap();
}

async fn a_notebook_serves_on_8888_with_its_token(ns: &str) {
    apply(&object(
        "Notebook",
        "nb",
        ns,
        json!({
            "image": busybox(),
            "model": {"name": "base"},
            "command": ["httpd", "-f", "-p", "8888", "-h", "/content/model"],
            "resources": small(),
        }),
    ));
    until_ready(ns, "Notebook", "nb", "True", None).await;
    let body = get_through_port_forward(ns, "pod/nb-notebook", 8888, "/api").await;
    assert_eq!(body.trim(), "{\"jupyter\":\"busybox\"}");
    let token = kubectl(&[
        "exec",
        "nb-notebook",
        "-n",
        ns,
        "--",
        "sh",
        "-c",
        "printf %s \"$NOTEBOOK_TOKEN\"",
    ])
    .expect("kubectl exec into the notebook");
    assert!(token.len() >= 32, "NOTEBOOK_TOKEN is {token:?}");
    kubectl(&["delete", "notebook", "nb", "-n", ns, "--wait=true"]).unwrap();
}

async fn a_failing_model_job_reports_job_failed(ns: &str) {
    apply(&object(
        "Model",
        "broken",
        ns,
        json!({
            "image": busybox(),
            "command": ["sh", "-c", "echo 'no weights at the URL' > /dev/termination-log; exit 2"],
            "resources": small(),
        }),
    ));
    let o = until_ready(ns, "Model", "broken", "False", Some("JobFailed")).await;
    let complete = o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Complete")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(complete["reason"], "JobFailed", "{o:#}");
    // The container's own words, from the real kubelet's termination message.
    let message = complete["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("exited with code 2") && message.contains("no weights at the URL"),
        "{message}"
    );
    assert_eq!(o["status"]["ready"], false);
}

async fn the_operator_runs_models_servers_and_notebooks_on_the_real_node(s3: &S3Server) {
    let ns = TestNamespace::new("real-op");
    let op = RunningOperator::start(&ns.name, kind_cloud_on_real_node(s3)).await;
    let base =
        a_model_job_sees_the_container_contract_and_its_artifacts_reach_the_bucket(&ns.name, s3)
            .await;
    a_fine_tune_reads_its_base_model_read_only(&ns.name, s3, &base).await;
    an_inline_volume_naming_another_namespace_s_model_mounts_the_pod_s_own(&ns.name, s3, &base)
        .await;
    a_server_is_ready_once_its_http_server_answers(&ns.name).await;
    a_notebook_serves_on_8888_with_its_token(&ns.name).await;
    a_failing_model_job_reports_job_failed(&ns.name).await;
    op.stop().await;
    // Pods go before the cluster does, so that their volumes are unpublished by the plugin.
    delete_namespace(&ns.name);
}

/// With a claim per namespace (`S3_CSI_VOLUMES=namespace`), pods mount one static volume of
/// the namespace's folder, each folder by `subPath`: a Model's Job writes its own folder, a
/// fine-tune reads its base model's read-only and cannot write there, and the namespace
/// holds one claim whatever its number of objects, owned by none of them.
async fn a_claim_per_namespace_mounts_each_object_s_own_folder(s3: &S3Server) {
    let ns = TestNamespace::new("real-nsclaim");
    let op = RunningOperator::start(&ns.name, kind_cloud_on_real_node_by_namespace(s3)).await;
    let base =
        a_model_job_sees_the_container_contract_and_its_artifacts_reach_the_bucket(&ns.name, s3)
            .await;
    assert!(
        prefix_of(&base).starts_with(&format!("namespaces/{}/", ns.name)),
        "{}",
        prefix_of(&base)
    );
    a_fine_tune_reads_its_base_model_read_only(&ns.name, s3, &base).await;
    let claims = kubectl_json(&["get", "pvc", "-n", &ns.name, "-o", "json"]).unwrap();
    let claims = claims["items"].as_array().unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0]["metadata"]["name"], "substratus-bucket-rw");
    assert!(
        claims[0]["metadata"]["ownerReferences"].is_null(),
        "{:?}",
        claims[0]
    );
    let pod = kubectl_json(&[
        "get",
        "pods",
        "-n",
        &ns.name,
        "-l",
        "model=tuned",
        "-o",
        "json",
    ])
    .unwrap();
    let mounts = &pod["items"][0]["spec"]["containers"][0]["volumeMounts"];
    let model = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/content/model")
        .unwrap_or_else(|| panic!("{mounts}"));
    assert_eq!(model["readOnly"], true, "{model}");
    assert_eq!(
        model["subPath"]
            .as_str()
            .map(|p| format!("namespaces/{}/{p}", ns.name)),
        Some(format!("{}/artifacts", prefix_of(&base))),
        "{model}"
    );
    op.stop().await;
    delete_namespace(&ns.name);
}

fn helm(args: &[&str]) -> Result<String, String> {
    let c = cluster::shared();
    let out = std::process::Command::new(c.bin_dir.join("helm"))
        .arg(format!("--kubeconfig={}", c.kubeconfig.display()))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "helm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The image and node of each of the operator's pods.
fn operator_pods(ns: &str) -> Vec<(String, String)> {
    // The gateway runs the same image under a selector of its own.
    let pods = kubectl_json(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/name=substratus",
    ])
    .unwrap();
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Whether `user` wrote the status of Model `ns/name` (the API server's audit log).
fn status_written_by(user: &str, ns: &str, name: &str) -> bool {
    let log = substratus_devcluster::audit_log_of(&cluster::shared().kubeconfig);
    substratus_tests::audit::entries(&log, user, jiff::Timestamp::UNIX_EPOCH)
        .iter()
        .any(|e| {
            e.is_write()
                && e.object_ref.as_ref().is_some_and(|o| {
                    o.resource == "models"
                        && o.subresource.as_deref() == Some("status")
                        && o.namespace.as_deref() == Some(ns)
                        && o.name.as_deref() == Some(name)
                })
        })
}

async fn the_chart_installs_and_upgrades_with_wait_and_its_pods_reconcile(s3: &S3Server) {
    let Ok(binary) = std::env::var("SUBSTRATUS_OPERATOR_BIN") else {
        panic!(
            "SUBSTRATUS_OPERATOR_BIN must name a release build of substratus-operator \
             (hack/test.sh builds one): the chart is installed from its image"
        );
    };
    for tag in ["t1", "t2"] {
        let image = substratus_devcluster::recipes::operator(Path::new(&binary), tag)
            .expect("the operator image");
        node::ctr(&["images", "import", &image.archive.to_string_lossy()])
            .expect("loading the operator image into the node");
    }
    let release_ns = "substratus-pod";
    let watched = TestNamespace::new("chart");
    kubectl(&["create", "namespace", release_ns]).unwrap();
    apply(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s3-credentials", "namespace": release_ns},
        "stringData": {"AWS_ACCESS_KEY_ID": substratus_devcluster::s3::ACCESS_KEY,
                       "AWS_SECRET_ACCESS_KEY": substratus_devcluster::s3::SECRET_KEY}}));
    let chart = substratus_tests::manifests::repo_root()
        .join("deploy/helm/substratus")
        .to_string_lossy()
        .into_owned();
    let helm_with = |verb: &str, tag: &str| {
        let mut args: Vec<String> = [
            verb,
            "sub-pod",
            &chart,
            "-n",
            release_ns,
            "--wait",
            "--timeout=180s",
            // The cluster's CRDs, applied by the test harness, become the release's: the
            // chart's own (templates, kept on uninstall) are applied over them.
            "--take-ownership",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for v in [
            "image.repository=localhost/substratus/substratus-operator".to_owned(),
            format!("image.tag={tag}"),
            "cloud=kind".into(),
            "clusterName=local".into(),
            "artifactBucketURL=s3://substratus-artifacts".into(),
            "registryURL=registry.local:5000".into(),
            // Pods reach the S3 server at the node's address, relayed to the host.
            format!("kind.s3Endpoint=http://{}:{}", node::NODE_IP, s3.port),
            format!("kind.s3PublicEndpoint={}", s3.endpoint()),
            "kind.credentialsSecret=s3-credentials".into(),
            format!("kind.csiDriver={}", node::CSI_DRIVER),
            format!("watchNamespace={}", watched.name),
            // The gateway, routing the watched namespace's Servers.
            "gateway.enabled=true".into(),
            format!("gateway.watchNamespace={}", watched.name),
            "gateway.holdTimeoutSeconds=150".into(),
        ] {
            args.push("--set".into());
            args.push(v);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        helm(&refs)
    };
    helm_with("install", "t1").expect("helm install --wait of the chart");
    let running = operator_pods(release_ns);
    assert_eq!(running.len(), 2, "two replicas: {running:?}");
    for (image, node_name) in &running {
        assert_eq!(image, "localhost/substratus/substratus-operator:t1");
        assert_eq!(node_name, node::NODE_NAME);
    }
    let user = format!("system:serviceaccount:{release_ns}:substratus-operator");
    let model = |name: &str| {
        object(
            "Model",
            name,
            &watched.name,
            json!({
                "image": busybox(),
                "command": ["sh", "-c", "echo weights > /content/artifacts/weights"],
                "resources": small(),
            }),
        )
    };
    apply(&model("by-pod"));
    until_ready(&watched.name, "Model", "by-pod", "True", None).await;
    assert!(
        status_written_by(&user, &watched.name, "by-pod"),
        "the Model's status was not written by the operator's pod ({user})"
    );

    helm_with("upgrade", "t2").expect("helm upgrade --wait to a new image");
    let running = operator_pods(release_ns);
    assert!(
        !running.is_empty() && running.iter().all(|(i, _)| i.ends_with(":t2")),
        "after the upgrade: {running:?}"
    );
    apply(&model("after-upgrade"));
    until_ready(&watched.name, "Model", "after-upgrade", "True", None).await;
    assert!(status_written_by(&user, &watched.name, "after-upgrade"));

    gateway::the_gateway_scales_a_server_from_zero_routes_and_spreads_its_load(
        &watched.name,
        release_ns,
        "sub-pod-substratus-gateway",
    )
    .await;

    helm(&[
        "uninstall",
        "sub-pod",
        "-n",
        release_ns,
        "--wait",
        "--timeout=60s",
    ])
    .unwrap();
    delete_namespace(release_ns);
}

/// `dir` packed as `sub` packs it: a gzipped tar of its files in sorted order, owner 0.
fn pack(dir: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let path = dir.join(&n);
        if path.is_dir() {
            tar.append_dir_all(&n, &path).unwrap();
        } else {
            tar.append_path_with_name(&path, &n).unwrap();
        }
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// PUTs `context` to the signed URL the Model `name` is given, as `sub` does (with its
/// Content-MD5), and touches the Model so that the upload is checked at once.
async fn put_upload(ns: &str, name: &str, context: Vec<u8>) {
    use md5::Digest as _;
    let url = wait_for("a signed upload URL", Duration::from_secs(60), || async {
        let o = kubectl_json(&["get", "model", name, "-n", ns])?;
        Ok(o["status"]["buildUpload"]["signedURL"]
            .as_str()
            .map(str::to_owned))
    })
    .await;
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&context))
    };
    let put = reqwest::Client::new()
        .put(&url)
        .header("Content-MD5", b64)
        .body(context)
        .send()
        .await
        .expect("the PUT to the signed URL");
    assert!(put.status().is_success(), "PUT: {}", put.status());
    let touched = format!("substratus.ai/upload-timestamp={}", jiff::Timestamp::now());
    kubectl(&["annotate", "model", name, "-n", ns, "--overwrite", &touched]).unwrap();
}

/// Applies the Model of `dir/model.yaml` (with `changes` merged into its spec) as an upload
/// build of `dir`, PUTs the packed directory to the signed URL as `sub` does, and waits until
/// the Model is Ready; returns it.
async fn upload_build(ns: &str, dir: &Path, changes: Value) -> Value {
    use md5::Digest as _;
    let context = pack(dir);
    let md5 = substratus_core::names::hex(&md5::Md5::digest(&context));
    let mut manifest: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("model.yaml")).unwrap()).unwrap();
    let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
    manifest["metadata"]["namespace"] = json!(ns);
    for (k, v) in changes.as_object().into_iter().flatten() {
        manifest["spec"][k] = v.clone();
    }
    manifest["spec"]["build"] = json!({"upload": {"md5Checksum": md5, "requestID": "first"}});
    let started = std::time::Instant::now();
    apply(&manifest);
    put_upload(ns, &name, context).await;
    let done = until_ready(ns, "Model", &name, "True", None).await;
    eprintln!(
        "{}: upload → kaniko build → push → run → Ready in {:.1}s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    let image = done["spec"]["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with(&format!("{}/", node::REGISTRY_HOST)) && image.ends_with(&md5),
        "the Model runs {image}, not the image built from the upload"
    );
    done
}

/// `sub run DIR` as a user runs it: it packs and uploads DIR, the Model is built by kaniko
/// and run, and the run's log lines reach the terminal before `sub` exits; returns the Model.
async fn sub_run_builds_runs_and_streams_the_logs(ns: &str, dir: &Path) -> Value {
    let mut cmd = cli::sub(ns);
    cmd.args(["run", "--timeout", "5m"]).arg(dir);
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("running sub run"))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sub run: {}\n{stderr}", out.status);
    eprintln!(
        "sub run {}: upload → kaniko build → push → run → Ready in {:.1}s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    for line in ["[run] epoch 1/3", "[run] epoch 3/3"] {
        assert!(stderr.contains(line), "no {line:?} from sub run:\n{stderr}");
    }
    let manifest: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("model.yaml")).unwrap()).unwrap();
    let name = manifest["metadata"]["name"].as_str().unwrap();
    let done = kubectl_json(&["get", "model", name, "-n", ns]).unwrap();
    let image = done["spec"]["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with(&format!("{}/", node::REGISTRY_HOST)),
        "the Model runs {image}, not an image built in the cluster"
    );
    done
}

/// Pushes an image archive `localhost/substratus/<name>:<tag>` to the node's registry as
/// `<repository>:<tag>`.
fn seed_registry(image: &substratus_devcluster::image::Built, repository: &str) {
    let tag = image.reference.rsplit_once(':').unwrap().1;
    node::push_to_registry(&image.archive, repository, tag).expect("pushing a base image");
}

async fn uploaded_directories_are_built_by_kaniko_pushed_to_the_registry_and_run(s3: &S3Server) {
    let bin = substratus_devcluster::locate_binaries().unwrap();
    let kaniko = substratus_devcluster::recipes::kaniko(&bin).expect("the kaniko image");
    node::ctr(&["images", "import", &kaniko.archive.to_string_lossy()]).unwrap();
    // The Dockerfiles' base images, in the registry the builds pull from: busybox by its
    // name there, Python as the Docker Hub image `python:3.11-slim` that the builder's
    // registry mirror serves.
    seed_registry(
        &substratus_devcluster::recipes::busybox().unwrap(),
        "busybox",
    );
    seed_registry(
        &substratus_devcluster::recipes::python().expect("the Python image"),
        "library/python",
    );

    // Uploaded contexts are checked and unpacked by the operator's image before kaniko runs.
    let binary = std::env::var("SUBSTRATUS_OPERATOR_BIN")
        .expect("SUBSTRATUS_OPERATOR_BIN: a release build of substratus-operator");
    let checker = substratus_devcluster::recipes::operator(Path::new(&binary), "context")
        .expect("the operator image");
    node::ctr(&["images", "import", &checker.archive.to_string_lossy()]).unwrap();

    let ns = TestNamespace::new("real-build");
    let build = substratus_core::plan::build::BuildSettings {
        builder_image: kaniko.reference.clone(),
        context_image: Some(checker.reference.clone()),
        ..Default::default()
    };
    let op = RunningOperator::start_with(&ns.name, kind_cloud_on_real_node(s3), build).await;
    let examples = substratus_tests::manifests::repo_root().join("examples");

    let local =
        sub_run_builds_runs_and_streams_the_logs(&ns.name, &examples.join("local/custom-model"))
            .await;
    // The Job ran the built image: the script baked into it wrote the artifacts.
    assert_eq!(
        stored(s3, &format!("{}/artifacts/result.txt", prefix_of(&local))).trim(),
        "trained for 3 epochs by the image built from this directory"
    );

    // The cloud example itself, unchanged: `FROM python:3.11-slim`.
    let cloud = upload_build(&ns.name, &examples.join("custom-model"), json!({})).await;
    let model: Value = serde_json::from_str(&stored(
        s3,
        &format!("{}/artifacts/model.json", prefix_of(&cloud)),
    ))
    .unwrap();
    let weights = model["weights"].as_array().expect("weights");
    assert_eq!(weights.len(), 8, "width 8 from params: {model}");
    assert!(
        weights
            .iter()
            .all(|w| (w.as_f64().unwrap() - 0.3).abs() < 1e-9),
        "3 epochs of +0.1: {model}"
    );
    an_archive_leaving_its_context_is_refused_before_the_builder_runs(&ns.name).await;
    op.stop().await;
    delete_namespace(&ns.name);
}

/// An upload whose archive holds `../` and absolute-link entries: the check before the
/// builder refuses it, the build fails naming the entry, and kaniko never starts.
async fn an_archive_leaving_its_context_is_refused_before_the_builder_runs(ns: &str) {
    use md5::Digest as _;
    use substratus_tests::archives::{Entry, raw_tar_gz};
    let context = raw_tar_gz(&[
        Entry::File(
            "Dockerfile",
            b"FROM registry.substratus.svc.cluster.local:5000/busybox:1.35.0\nCOPY . /x\n",
        ),
        Entry::Symlink("etc", "/etc"),
        Entry::File("../../escape.txt", b"outside"),
    ]);
    let md5 = substratus_core::names::hex(&md5::Md5::digest(&context));
    apply(&object(
        "Model",
        "traversal",
        ns,
        json!({"build": {"upload": {"md5Checksum": md5, "requestID": "r1"}},
            "resources": small()}),
    ));
    put_upload(ns, "traversal", context).await;
    let failed = until_ready(ns, "Model", "traversal", "False", Some("BuildFailed")).await;
    let message = failed["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Built")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("container context exited")
            && message.contains("leaves the build context"),
        "{message}"
    );
    // The builder container never ran.
    let pods =
        kubectl_json(&["get", "pods", "-n", ns, "-l", "model=traversal,role=build"]).unwrap();
    for pod in pods["items"].as_array().into_iter().flatten() {
        for cs in pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(
                cs["state"]["terminated"]["startedAt"].is_null()
                    && cs["state"]["running"].is_null(),
                "the builder ran: {cs}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_node_runs_containers_and_leaves_nothing_behind() {
    if let Ok(why) = std::env::var("SUBSTRATUS_SKIP_REAL_NODE") {
        eprintln!("real-node tests skipped: {why}");
        return;
    }
    let before = MachineState::now();
    cluster::with_real_node();
    {
        let _stop = StopCluster;
        let _ = cluster::shared();
        let ns = TestNamespace::new("real");
        a_container_sees_its_spec_and_its_output_reaches_kubectl_logs(&ns.name).await;
        a_failing_container_fails_its_pod_with_its_message(&ns.name).await;
        pods_reach_the_api_server_through_its_service_and_cluster_dns(&ns.name).await;
        a_ready_http_server_is_reached_by_port_forward_and_exec(&ns.name).await;
        let bin = substratus_devcluster::locate_binaries().unwrap();
        let s3 = S3Server::start(&bin, "substratus-artifacts").expect("the S3 server");
        // The node's CSI plugin and pods reach the S3 server at the same port in the node's
        // namespace.
        let _relay = substratus_devcluster::netns::forward_into(
            &substratus_devcluster::netns::NetNs {
                name: node::NETNS.into(),
            },
            s3.port,
        )
        .expect("relaying the S3 port into the node's namespace");
        apply(&csi_secret(&s3));
        node::write_csi_credentials(
            &s3.endpoint(),
            substratus_devcluster::s3::ACCESS_KEY,
            substratus_devcluster::s3::SECRET_KEY,
        )
        .expect("the S3 plugin's inline credentials");
        the_operator_runs_models_servers_and_notebooks_on_the_real_node(&s3).await;
        a_claim_per_namespace_mounts_each_object_s_own_folder(&s3).await;
        workloads::the_reference_workloads_load_train_and_serve_a_model(&s3).await;
        uploaded_directories_are_built_by_kaniko_pushed_to_the_registry_and_run(&s3).await;
        the_chart_installs_and_upgrades_with_wait_and_its_pods_reconcile(&s3).await;
    }
    let after = MachineState::now();
    assert_eq!(after, before, "the real node left something behind");
}
