//! Adapters loaded at run time into real engine replicas: two reference servers (tinylm,
//! the image the local cluster runs) on loopback start without any adapter; the gateway
//! loads `sql` into a replica through its adapter API before the first request for it,
//! loads it once per replica, loads the new folder when the Server's status names a new
//! run, and a replica that cannot load it is reported with what it answered.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use substratus_crds::Server;
use substratus_gateway::load::Loads;
use substratus_gateway::metrics::Metrics;
use substratus_gateway::table::Table;
use substratus_gateway::{Gateway, Options};
use tokio::sync::{Notify, watch};

mod common;
use common::slice;

fn tinylm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/tinylm")
}

/// Trains tiny models: the base at `<root>/model` and two runs of adapter `sql`.
fn train(root: &Path) {
    let script = r#"
import sys
from tinylm.model import Model
root = sys.argv[1]
for folder, text in [("model", "ping pong ping pong "), ("adapters/sql/1", "ping sql ping sql "),
                     ("adapters/sql/2", "ping seq ping seq ")]:
    m = Model(config={"name": folder})
    for _ in range(30):
        m.train_step(m.tokenizer.encode(text), 1.0)
    m.save(f"{root}/{folder}")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(root)
        .env("PYTHONPATH", tinylm_dir())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tinylm server process on a loopback port, killed when dropped.
struct Engine {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn engine(root: &Path) -> Engine {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new("python3")
        .args(["-c", "from tinylm import serve; httpd, _ = serve.server(__import__('os').environ['MODEL'], int(__import__('os').environ['PORT']), 'tiny', host='127.0.0.1', adapters=None); httpd.serve_forever()"])
        .env("PYTHONPATH", tinylm_dir())
        .env("MODEL", root.join("model"))
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let e = Engine {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = get(&format!("http://{}/", e.addr)).await {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "tinylm on {} did not start",
            e.addr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: &str) -> Result<(u16, Value), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Server `tiny` with adapter `sql`, whose copy the status puts at `path`.
fn server(path: &str) -> Server {
    serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Server",
        "metadata": {"name": "tiny", "namespace": "team"},
        "spec": {"image": "tinylm", "model": {"name": "base"},
                 "adapters": [{"name": "sql", "model": {"name": "base-sql"}}]},
        "status": {"adapters": [{"name": "sql", "model": "base-sql", "generation": 1, "path": path}]},
    }))
    .unwrap()
}

/// What each replica lists as loaded adapter `sql` (its folder), in replica order.
async fn loaded(replicas: &[&Engine]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for e in replicas {
        let (_, list) = get(&format!("http://{}/v1/models", e.addr)).await.unwrap();
        out.push(
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == "sql")
                .and_then(|m| m["root"].as_str().map(str::to_owned)),
        );
    }
    out
}

fn adapter_loads(registry: &Registry) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with("substratus_gateway_adapter_loads_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn adapters_are_loaded_into_replicas_at_run_time_once_and_again_for_a_new_run() {
    let tmp = tempfile::tempdir().unwrap();
    train(tmp.path());
    let (a, b) = (engine(tmp.path()).await, engine(tmp.path()).await);
    let run = |n: u32| {
        tmp.path()
            .join(format!("adapters/sql/{n}"))
            .display()
            .to_string()
    };
    assert_eq!(
        loaded(&[&a, &b]).await,
        [None, None],
        "the replicas start without it"
    );

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let endpoints = slice("tiny", &[a.addr, b.addr]);
    let (tx, rx) = watch::channel(Arc::new(Table::build(&[server(&run(1))], &endpoints)));
    let gw = Gateway::new(
        rx,
        Loads::default(),
        metrics,
        Options::default(),
        Arc::new(Notify::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gw.router()).await.unwrap() });
    let ask = |model: &'static str| {
        let url = url.clone();
        async move {
            post(
                &url,
                json!({"model": model, "prompt": "ping", "max_tokens": 4, "temperature": 0}),
            )
            .await
        }
    };

    let models_url = url.replace("/v1/completions", "/v1/models");
    let (_, list) = get(&models_url).await.unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["tiny", "tiny/sql"]);

    // Every request for the adapter is answered by it, on whichever replica takes it.
    for _ in 0..6 {
        let (s, body) = ask("tiny/sql").await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["model"], "sql", "{body}");
        assert!(
            body["choices"][0]["text"].as_str().unwrap().contains("sql"),
            "{body}"
        );
    }
    let after_first = loaded(&[&a, &b]).await;
    let holding = after_first.iter().filter(|r| r.is_some()).count() as u64;
    assert!(holding >= 1, "{after_first:?}");
    assert!(
        after_first.iter().flatten().all(|r| *r == run(1)),
        "{after_first:?}"
    );
    assert_eq!(
        adapter_loads(&registry),
        holding,
        "one load per replica, not per request"
    );
    // The base model is untouched.
    let (s, body) = ask("tiny").await;
    assert_eq!(
        (
            s,
            body["choices"][0]["text"]
                .as_str()
                .map(|t| t.contains("pon"))
        ),
        (200, Some(true)),
        "{body}"
    );

    // A new run of the adapter's Model is a new folder: the next request loads it.
    tx.send(Arc::new(Table::build(&[server(&run(2))], &endpoints)))
        .unwrap();
    for _ in 0..4 {
        let (s, body) = ask("tiny/sql").await;
        assert_eq!(s, 200, "{body}");
        assert!(
            body["choices"][0]["text"].as_str().unwrap().contains("seq"),
            "{body}"
        );
    }
    let after_rerun = loaded(&[&a, &b]).await;
    assert!(after_rerun.contains(&Some(run(2))), "{after_rerun:?}");

    // A folder the replicas cannot load: the request fails naming the adapter and what the
    // replica said, after trying both.
    tx.send(Arc::new(Table::build(
        &[server("/nonexistent/sql/3")],
        &endpoints,
    )))
    .unwrap();
    let (s, body) = ask("tiny/sql").await;
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(s, 502, "{body}");
    assert!(message.contains("2 tried"), "{message}");
    assert!(
        message.contains("did not load adapter sql from /nonexistent/sql/3"),
        "{message}"
    );
    assert!(
        message.contains("lora_path"),
        "the engine's own words: {message}"
    );
}
