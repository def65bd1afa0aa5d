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
use substratus_tests::cluster::{self, TestNamespace, wait_for};

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
    }
    let after = MachineState::now();
    assert_eq!(after, before, "the real node left something behind");
}
