//! `sub` as a user runs it against the real node: `sub serve` forwards to a Server of the
//! reference model and a completion comes back through the forward; `sub notebook` opens
//! Jupyter with the Notebook's token, and a notebook saved in Jupyter comes back to the local
//! directory; `sub run` (in the build test) streams the built image's logs.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use substratus_tests::cluster::{self, wait_for};

use super::kubectl;

const WAIT: Duration = Duration::from_secs(150);

/// `sub --kubeconfig <the test cluster's> -n <ns> <args…>`.
pub fn sub(ns: &str) -> Command {
    let mut c = Command::new(substratus_tests::binaries::sub());
    c.arg("--kubeconfig")
        .arg(&cluster::shared().kubeconfig)
        .args(["-n", ns]);
    c
}

/// A running `sub` whose stderr lines are collected; killed when dropped.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting sub");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(l);
            }
        });
        Running { child, lines }
    }

    /// The first word of its output that starts with `prefix`.
    async fn word(&self, prefix: &str) -> String {
        let lines = self.lines.clone();
        let what = format!("sub to print {prefix}…");
        wait_for(&what, WAIT, || {
            let lines = lines.clone();
            async move {
                let l = lines.lock().unwrap();
                match l
                    .iter()
                    .flat_map(|l| l.split_whitespace())
                    .find(|w| w.starts_with(prefix))
                {
                    Some(w) => Ok(Some(w.to_owned())),
                    None => Err(l.join("\n")),
                }
            }
        })
        .await
    }

    /// Answers `q` to its prompt and waits for it to exit; returns its output.
    async fn quit(mut self) -> String {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"q\n").unwrap();
        drop(stdin);
        let child = &mut self.child;
        let status = wait_for("sub to exit", Duration::from_secs(60), || {
            let status = child.try_wait().map_err(|e| e.to_string());
            async move { status }
        })
        .await;
        let out = self.lines.lock().unwrap().join("\n");
        assert!(status.success(), "sub: {status}\n{out}");
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, value: &Value) {
    std::fs::write(dir.join(name), value.to_string()).unwrap();
}

/// Waits until `what` is gone (a deletion by `sub` waits for no dependant).
async fn gone(ns: &str, what: &str) {
    wait_for(
        &format!("{what} to be gone"),
        Duration::from_secs(60),
        || async {
            match kubectl(&["get", what, "-n", ns]) {
                Err(e) if e.contains("NotFound") => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// `sub serve` of a directory holding the Server `srv` (as running): the forward answers a
/// completion from the fine-tuned model, and quitting with `--on-exit delete` deletes it.
pub async fn sub_serve_forwards_to_the_server_and_a_completion_comes_back(ns: &str, server: Value) {
    let project = tempfile::tempdir().unwrap();
    write(project.path(), "server.yaml", &server);
    let port = substratus_devcluster::ports::free_loopback_port().unwrap();
    let mut cmd = sub(ns);
    cmd.args(["serve", "--no-open-browser", "--on-exit", "delete"])
        .args(["--port", &port.to_string()])
        .arg(project.path());
    let serving = Running::start(cmd);
    let url = serving.word(&format!("http://localhost:{port}/")).await;
    let base = url.trim_end_matches('/').replace("localhost", "127.0.0.1");
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .json(
            &json!({"prompt": "Q: What runs the containers?\nA:", "max_tokens": 16,
            "temperature": 0}),
        )
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("a completion through sub serve's forward")
        .json()
        .await
        .unwrap();
    let text = answer["choices"][0]["text"].as_str().unwrap_or_default();
    assert_eq!(text.chars().count(), 16, "{answer}");
    assert_eq!(answer["object"], "text_completion", "{answer}");
    let out = serving.quit().await;
    assert!(out.contains("Server srv deleted"), "{out}");
    gone(ns, "server/srv").await;
}

/// `sub notebook` of a directory holding a Notebook over the fine-tuned Model and the
/// Dataset: the URL it prints carries the Notebook's token and reaches Jupyter; a notebook
/// saved through Jupyter's API lands in the local directory; the mounted folders do not.
pub async fn sub_notebook_opens_jupyter_and_brings_saved_files_home(
    ns: &str,
    image: &str,
    resources: Value,
) {
    let project = tempfile::tempdir().unwrap();
    write(
        project.path(),
        "notebook.yaml",
        &json!({"apiVersion": "substratus.ai/v1", "kind": "Notebook",
            "metadata": {"name": "explore"},
            "spec": {"image": image, "model": {"name": "tuned"}, "dataset": {"name": "qa"},
                "resources": resources}}),
    );
    let port = substratus_devcluster::ports::free_loopback_port().unwrap();
    let mut cmd = sub(ns);
    cmd.args(["notebook", "--no-open-browser", "--on-exit", "delete"])
        .args(["--port", &port.to_string()])
        .arg(project.path());
    let notebook = Running::start(cmd);
    let url = notebook
        .word(&format!("http://localhost:{port}/?token="))
        .await;
    let token = url.rsplit_once("?token=").unwrap().1.to_owned();
    let secret = super::kubectl_json(&["get", "secret", "explore-notebook-token", "-n", ns])
        .expect("the Notebook's token Secret");
    let stored = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        secret["data"]["token"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        token.as_bytes(),
        stored,
        "the URL's token is not the Notebook's"
    );

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let root: Value = client
        .get(format!("{base}/api/contents?token={token}"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("Jupyter through sub notebook's forward")
        .json()
        .await
        .unwrap();
    assert!(
        root["content"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "model"),
        "{root}"
    );
    let saved = client
        .put(format!("{base}/api/contents/analysis.ipynb?token={token}"))
        .json(
            &json!({"type": "notebook", "content": {"cells": [], "metadata": {},
            "nbformat": 4, "nbformat_minor": 5}}),
        )
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert!(saved.status().is_success(), "{}", saved.status());
    let local = project.path().join("analysis.ipynb");
    wait_for("the saved notebook in the local directory", WAIT, || {
        let text = std::fs::read_to_string(&local).ok();
        async move {
            Ok(text
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .filter(|v| v["nbformat"] == 4))
        }
    })
    .await;
    for mounted in ["model", "data", "artifacts"] {
        assert!(
            !project.path().join(mounted).exists(),
            "{mounted} was synced"
        );
    }
    let out = notebook.quit().await;
    assert!(out.contains("Notebook explore deleted"), "{out}");
    gone(ns, "notebook/explore").await;
}
