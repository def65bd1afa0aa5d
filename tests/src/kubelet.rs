//! What a simulated pod's "containers" do when reached through the kubelet API (kwok serves
//! it on loopback): logs from a file, exec as a local process in a directory, port-forward to
//! a local port. Each is a kwok object named after the pod.

use std::path::{Path, PathBuf};

use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use serde_json::{Value, json};

fn kwok(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "kwok.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "kwok.x-k8s.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

async fn apply(c: &kube::Client, ns: &str, kind: &str, plural: &str, pod: &str, spec: Value) {
    let obj = json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": kind,
        "metadata": {"name": pod, "namespace": ns},
        "spec": spec,
    });
    Api::<DynamicObject>::namespaced_with(c.clone(), ns, &kwok(kind, plural))
        .patch(
            pod,
            &PatchParams::apply("substratus-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {kind} for pod {pod}: {e}"));
}

/// Serves `lines` as the logs of every container of `pod`; returns the log file.
pub async fn serve_logs(
    c: &kube::Client,
    ns: &str,
    pod: &str,
    dir: &Path,
    lines: &[&str],
) -> PathBuf {
    let file = dir.join(format!("{pod}.log"));
    // The container runtime's log format, which the kubelet API parses.
    let body: String = lines
        .iter()
        .map(|l| format!("2026-01-01T00:00:00.000000000Z stdout F {l}\n"))
        .collect();
    std::fs::write(&file, body).expect("writing the log file");
    apply(
        c,
        ns,
        "Logs",
        "logs",
        pod,
        json!({"logs": [{"logsFile": file}]}),
    )
    .await;
    file
}

/// Runs exec'd commands of `pod` as local processes in `workdir`.
pub async fn serve_exec(c: &kube::Client, ns: &str, pod: &str, workdir: &Path) {
    apply(
        c,
        ns,
        "Exec",
        "execs",
        pod,
        json!({"execs": [{"local": {"workDir": workdir}}]}),
    )
    .await;
}

/// A directory holding busybox's `applets`, as a busybox or Alpine image's PATH has them;
/// removed when dropped.
#[must_use = "the applets are removed when the directory is dropped"]
pub fn busybox_applets(applets: &[&str]) -> tempfile::TempDir {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox (hack/install-deps.sh installs busybox-static)");
    let bin = tempfile::Builder::new()
        .prefix("substratus-busybox-")
        .tempdir()
        .unwrap();
    for applet in applets {
        std::os::unix::fs::symlink(busybox, bin.path().join(applet)).unwrap();
    }
    bin
}

/// Runs exec'd commands of `pod` as local processes in `workdir` with only busybox's applets
/// on the PATH (`sh`, `find`, `stat`, `tar`, `cat`, `ls`), as in a busybox or Alpine image:
/// a command that needs GNU options fails as it would there.
#[must_use = "the applets are removed when the directory is dropped"]
pub async fn serve_exec_busybox(
    c: &kube::Client,
    ns: &str,
    pod: &str,
    workdir: &Path,
) -> tempfile::TempDir {
    let bin = busybox_applets(&["sh", "find", "stat", "tar", "cat", "ls"]);
    apply(
        c,
        ns,
        "Exec",
        "execs",
        pod,
        json!({"execs": [{"local": {"workDir": workdir,
            "envs": [{"name": "PATH", "value": bin.path()}]}}]}),
    )
    .await;
    bin
}

/// Forwards `pod:<port>` to `127.0.0.1:<local>`.
pub async fn serve_port(c: &kube::Client, ns: &str, pod: &str, port: u16, local: u16) {
    apply(
        c,
        ns,
        "PortForward",
        "portforwards",
        pod,
        json!({"forwards": [{"ports": [port], "target": {"port": local, "address": "127.0.0.1"}}]}),
    )
    .await;
}
