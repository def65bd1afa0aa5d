//! The reference workloads (images/tinylm) on the real node: a Dataset loads records, a
//! Model is made and fine-tuned on them, a Server answers completions from the fine-tuned
//! weights, and a new generation of the Model replaces its artifacts and what is served.

use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use substratus_devcluster::node;
use substratus_devcluster::s3::S3Server;
use substratus_tests::cluster::{self, TestNamespace, wait_for};
use substratus_tests::operator::{RunningOperator, kind_cloud_on_real_node};

use super::{apply, kubectl, object, prefix_of, small, stored, until_ready};

fn bytes(s3: &S3Server, key: &str) -> Vec<u8> {
    std::fs::read(s3.object_path(key)).unwrap_or_else(|e| panic!("{key} is not in the bucket: {e}"))
}

/// `kubectl port-forward` to a Service, closed when dropped.
struct Forward {
    child: Child,
    base: String,
}

impl Forward {
    async fn open(ns: &str, target: &str, remote: u16) -> Forward {
        Forward::open_at(ns, target, remote, "/").await
    }

    /// A forward whose server is ready once `ready_path` answers 200.
    async fn open_at(ns: &str, target: &str, remote: u16, ready_path: &str) -> Forward {
        let port = substratus_devcluster::ports::free_loopback_port().unwrap();
        let child = cluster::kubectl()
            .args([
                "port-forward",
                "-n",
                ns,
                target,
                &format!("{port}:{remote}"),
            ])
            .arg("--address=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let f = Forward {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        f.get_ok(ready_path).await;
        f
    }

    /// `GET /` once it answers 200: the server's ready endpoint.
    async fn ready(&self) -> Value {
        self.get_ok("/").await
    }

    /// `GET path` once it answers 200, as JSON.
    async fn get_ok(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base);
        cluster::poll_until(
            "the server's / through port-forward",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    match reqwest::get(&url).await {
                        Ok(r) if r.status().is_success() => {
                            Ok(Some(r.json::<Value>().await.map_err(|e| e.to_string())?))
                        }
                        Ok(r) => Err(format!("HTTP {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, String) {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, String) {
        let r = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tinylm() -> String {
    substratus_devcluster::recipes::tinylm()
        .expect("the tinylm image")
        .reference
}

fn tuned(ns: &str, name: &str) -> Value {
    object(
        "Model",
        "tuned",
        ns,
        json!({
            "image": tinylm(),
            "command": ["train"],
            "model": {"name": "base"},
            "dataset": {"name": "qa"},
            "params": {"name": name, "num_train_epochs": 5, "save_steps": 10,
                "logging_steps": 5, "prompt_template": "Q: {question}\nA: {answer}\n"},
            "resources": small(),
        }),
    )
}

/// The generation whose run completed, from the `Complete` condition.
fn completed(o: &Value) -> i64 {
    o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Complete" && c["status"] == "True")
        .and_then(|c| c["observedGeneration"].as_i64())
        .unwrap_or(0)
}

pub async fn the_reference_workloads_load_train_and_serve_a_model(s3: &S3Server) {
    let image = substratus_devcluster::recipes::tinylm().expect("the tinylm image");
    node::ctr(&["images", "import", &image.archive.to_string_lossy()]).unwrap();
    let ns = TestNamespace::new("real-lm");
    let ns = ns.name.as_str();
    let op = RunningOperator::start(ns, kind_cloud_on_real_node(s3)).await;

    apply(&object(
        "Dataset",
        "qa",
        ns,
        json!({"image": tinylm(), "command": ["load-dataset"],
            "params": {"path": "/opt/tinylm/data"}, "resources": small()}),
    ));
    apply(&object(
        "Model",
        "base",
        ns,
        json!({"image": tinylm(), "command": ["load-model"],
            "params": {"name": "tiny-base", "epochs": 2}, "resources": small()}),
    ));
    apply(&tuned(ns, "tuned-v1"));

    let qa = until_ready(ns, "Dataset", "qa", "True", None).await;
    let records = stored(s3, &format!("{}/artifacts/questions.jsonl", prefix_of(&qa)));
    assert!(records.contains("containerd on the node"), "{records}");

    let base = until_ready(ns, "Model", "base", "True", None).await;
    let base_prefix = format!("{}/artifacts", prefix_of(&base));
    let config: Value =
        serde_json::from_str(&stored(s3, &format!("{base_prefix}/config.json"))).unwrap();
    assert_eq!(config["model_type"], "substratus-tinylm");
    assert_eq!(config["name"], "tiny-base");
    let tokenizer: Value =
        serde_json::from_str(&stored(s3, &format!("{base_prefix}/tokenizer.json"))).unwrap();
    assert_eq!(tokenizer["type"], "char");
    let base_weights = bytes(s3, &format!("{base_prefix}/model.safetensors"));
    assert!(
        base_weights.len() > 3_000_000,
        "{} bytes",
        base_weights.len()
    );

    let tuned_obj = until_ready(ns, "Model", "tuned", "True", None).await;
    let tuned_prefix = format!("{}/artifacts", prefix_of(&tuned_obj));
    let tuned_weights = bytes(s3, &format!("{tuned_prefix}/model.safetensors"));
    // The tensor is the files' tail (97 × 97 × 97 float32s after a JSON header, whose
    // metadata differs): the fine-tune changed it.
    let tensor = |w: &[u8]| w[w.len() - 97 * 97 * 97 * 4..].to_vec();
    assert_ne!(
        tensor(&tuned_weights),
        tensor(&base_weights),
        "fine-tuning left the weights as they were"
    );
    assert!(
        s3.object_path(&format!(
            "{tuned_prefix}/checkpoints/checkpoint-10/model.safetensors"
        ))
        .is_file(),
        "no checkpoint every save_steps"
    );
    let log = kubectl(&["logs", "-n", ns, "job/tuned-modeller"]).unwrap();
    assert!(
        log.contains("training on 6 records") && log.contains("epoch 5/5"),
        "{log}"
    );

    let srv = object(
        "Server",
        "srv",
        ns,
        json!({"image": tinylm(), "command": ["serve"], "model": {"name": "tuned"},
            "resources": small()}),
    );
    apply(&srv);
    until_ready(ns, "Server", "srv", "True", None).await;
    let server = Forward::open(ns, "service/srv-server", 8080).await;
    assert_eq!(server.ready().await["config"]["name"], "tuned-v1");
    let (code, body) = server
        .post(
            "/v1/completions",
            json!({"prompt": "Q: What runs the containers?\nA:", "max_tokens": 12,
                "temperature": 0, "stream": true}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(text.chars().count(), 12, "{body}");
    let (code, body) = server
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    drop(server);

    // A new generation runs again, replaces the artifacts, and the Server serves them.
    apply(&tuned(ns, "tuned-v2"));
    let rerun = wait_for(
        "the fine-tune's second run",
        Duration::from_secs(150),
        || async move {
            let o = super::kubectl_json(&["get", "model", "tuned", "-n", ns])?;
            if completed(&o) == 2 {
                Ok(Some(o))
            } else {
                Err(format!("{}", o["status"]))
            }
        },
    )
    .await;
    assert_eq!(
        prefix_of(&rerun),
        prefix_of(&tuned_obj),
        "the prefix is the object's"
    );
    let config: Value =
        serde_json::from_str(&stored(s3, &format!("{tuned_prefix}/config.json"))).unwrap();
    assert_eq!(config["name"], "tuned-v2");
    wait_for(
        "the Server to serve the second run",
        Duration::from_secs(150),
        || async move {
            let server = Forward::open(ns, "service/srv-server", 8080).await;
            let name = server.ready().await["config"]["name"].clone();
            if name == "tuned-v2" {
                Ok(Some(()))
            } else {
                Err(format!("serving {name}"))
            }
        },
    )
    .await;

    a_notebook_runs_jupyter_with_its_token_over_the_artifacts(ns, s3).await;
    // The same Server through `sub serve`, which deletes it on exit (freeing a core for the
    // next Notebook).
    super::cli::sub_serve_forwards_to_the_server_and_a_completion_comes_back(ns, srv).await;
    let notebook = substratus_devcluster::recipes::notebook().expect("the notebook image");
    super::cli::sub_notebook_opens_jupyter_and_brings_saved_files_home(
        ns,
        &notebook.reference,
        small(),
    )
    .await;
    op.stop().await;
    super::delete_namespace(ns);
}

async fn a_notebook_runs_jupyter_with_its_token_over_the_artifacts(ns: &str, s3: &S3Server) {
    let image = substratus_devcluster::recipes::notebook().expect("the notebook image");
    node::ctr(&["images", "import", &image.archive.to_string_lossy()]).unwrap();
    apply(&object(
        "Notebook",
        "nb",
        ns,
        json!({"image": image.reference, "model": {"name": "tuned"}, "dataset": {"name": "qa"},
            "resources": small()}),
    ));
    let nb = until_ready(ns, "Notebook", "nb", "True", None).await;
    let secret = super::kubectl_json(&["get", "secret", "nb-notebook-token", "-n", ns]).unwrap();
    let token = secret["data"]["token"].as_str().expect("the token");
    let token = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token).unwrap(),
    )
    .unwrap();
    let jupyter = Forward::open_at(ns, "pod/nb-notebook", 8888, "/api").await;
    // Without the token Jupyter refuses; with it, /content is its root.
    let (code, _) = jupyter
        .send(reqwest::Method::GET, "/api/contents", Value::Null)
        .await;
    assert_eq!(code, 403);
    let (code, body) = jupyter
        .send(
            reqwest::Method::GET,
            &format!("/api/contents?token={token}"),
            Value::Null,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let root: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = root["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for dir in ["model", "data", "artifacts"] {
        assert!(names.contains(&dir), "{names:?}");
    }
    // A file saved in Jupyter under artifacts/ is in the Notebook's prefix in the bucket.
    let (code, body) = jupyter
        .send(
            reqwest::Method::PUT,
            &format!("/api/contents/artifacts/notes.txt?token={token}"),
            json!({"type": "file", "format": "text", "content": "saved in Jupyter"}),
        )
        .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let key = format!("{}/artifacts/notes.txt", prefix_of(&nb));
    wait_for(
        "the saved file in the bucket",
        Duration::from_secs(30),
        || {
            let path = s3.object_path(&key);
            async move {
                match std::fs::read_to_string(&path) {
                    Ok(text) if text == "saved in Jupyter" => Ok(Some(())),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    drop(jupyter);
    kubectl(&["delete", "notebook", "nb", "-n", ns, "--wait=true"]).unwrap();
}
