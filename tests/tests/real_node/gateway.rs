//! The gateway from the chart, as a pod on the real node, in front of a tinylm Server that
//! autoscales from zero and serves a fine-tuned adapter of its Model. Requests are sent from inside the node's network namespace to the
//! gateway's Service, as a pod of the cluster would send them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use substratus_devcluster::netns::NetNs;
use substratus_devcluster::node;
use substratus_tests::cluster::wait_for;

use super::{apply, kubectl, kubectl_json, object, until_ready};

/// Runs `f` on a runtime whose threads live in the node's network namespace.
async fn in_node<T, F, Fut>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        NetNs {
            name: node::NETNS.into(),
        }
        .run(move || {
            // Threads started from a thread inside the namespace are inside it too.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(f()))
        })
        .expect("running in the node's namespace")
    })
    .await
    .unwrap()
}

/// POSTs JSON; the status and the body's text.
async fn post(url: &str, body: Value, timeout: Duration) -> Result<(u16, String), String> {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        r.status().as_u16(),
        r.text().await.map_err(|e| e.to_string())?,
    ))
}

fn spec_replicas(ns: &str, name: &str) -> i64 {
    kubectl_json(&["get", "server", name, "-n", ns])
        .map(|s| s["spec"]["replicas"].as_i64().unwrap_or(-1))
        .unwrap_or(-1)
}

async fn until_replicas(ns: &str, name: &str, want: i64, within: Duration) {
    wait_for(
        &format!("Server {name} at spec.replicas {want}"),
        within,
        || async move {
            match spec_replicas(ns, name) {
                n if n == want => Ok(Some(())),
                n => Err(format!("spec.replicas {n}")),
            }
        },
    )
    .await
}

/// The text of an SSE completion stream, and whether it ended with `[DONE]`.
fn streamed_text(body: &str) -> (String, bool) {
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let done = events.last() == Some(&"[DONE]");
    let text = events
        .iter()
        .filter(|e| **e != "[DONE]")
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    (text, done)
}

/// `gateway_service`: the chart's gateway Service (`<release>-gateway` in `release_ns`).
pub async fn the_gateway_scales_a_server_from_zero_routes_and_spreads_its_load(
    ns: &str,
    release_ns: &str,
    gateway_service: &str,
) {
    let image = substratus_devcluster::recipes::tinylm().expect("the tinylm image");
    node::ctr(&["images", "import", &image.archive.to_string_lossy()]).unwrap();
    let tinylm = image.reference.clone();
    // No CPU request: two replicas and the chart's pods fit the node's two cores.
    let light = json!({"cpu": 0, "memory": 1, "disk": 1});
    apply(&object(
        "Model",
        "lm",
        ns,
        json!({"image": tinylm, "command": ["load-model"],
            "params": {"name": "tiny-gw", "epochs": 1}, "resources": light}),
    ));
    // An adapter: the base fine-tuned on the questions the image ships.
    apply(&object(
        "Dataset",
        "qa",
        ns,
        json!({"image": tinylm, "command": ["load-dataset"],
            "params": {"path": "/opt/tinylm/data"}, "resources": light}),
    ));
    apply(&object(
        "Model",
        "lm-qa",
        ns,
        json!({"image": tinylm, "command": ["train"], "model": {"name": "lm"},
            "dataset": {"name": "qa"}, "resources": light,
            "params": {"name": "tiny-qa", "num_train_epochs": 20,
                       "prompt_template": "Q: {question}\nA: {answer}\n"}}),
    ));
    until_ready(ns, "Model", "lm", "True", None).await;
    until_ready(ns, "Model", "lm-qa", "True", None).await;
    apply(&object(
        "Server",
        "auto",
        ns,
        json!({"image": tinylm, "command": ["serve"], "model": {"name": "lm"},
            "adapters": [{"name": "qa", "model": {"name": "lm-qa"}}],
            "replicas": 0, "servedModelNames": ["tiny"], "resources": light,
            "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "targetRequests": 1,
                            "scaleDownDelaySeconds": 8}}),
    ));
    until_ready(ns, "Server", "auto", "False", Some("ScaledToZero")).await;

    let svc = kubectl_json(&["get", "service", gateway_service, "-n", release_ns]).unwrap();
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let port = svc["spec"]["ports"][0]["port"].as_i64().unwrap();
    let base = format!("http://{ip}:{port}");

    // The gateway lists the Server under both names once its watches have it.
    let models = {
        let base = base.clone();
        in_node(move || async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let got = async {
                    let r = reqwest::get(format!("{base}/v1/models")).await.ok()?;
                    r.json::<Value>().await.ok()
                }
                .await;
                if let Some(v) = got
                    .clone()
                    .filter(|v| v["data"].as_array().is_some_and(|d| d.len() == 4))
                {
                    return v;
                }
                assert!(
                    Instant::now() < deadline,
                    "the gateway never listed the Server: {got:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await
    };
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["auto", "auto/qa", "tiny", "tiny/qa"]);

    // The first request finds the Server at zero: it is held while a replica starts, then
    // answered, streaming.
    let t0 = Instant::now();
    let (first, unknown) = {
        let base = base.clone();
        in_node(move || async move {
            let first = post(
                &format!("{base}/v1/completions"),
                json!({"model": "tiny", "prompt": "Q: What runs the containers?\nA:",
                       "max_tokens": 12, "temperature": 0, "stream": true}),
                Duration::from_secs(150),
            )
            .await;
            let unknown = post(
                &format!("{base}/v1/completions"),
                json!({"model": "huge", "prompt": "x"}),
                Duration::from_secs(10),
            )
            .await;
            (first, unknown)
        })
        .await
    };
    // The same greedy completion from the base and from its adapter, through the gateway.
    let (from_base, from_adapter) = {
        let base = base.clone();
        in_node(move || async move {
            let url = format!("{base}/v1/completions");
            let ask = |model: &'static str| {
                post(
                    &url,
                    json!({"model": model, "prompt": "Q: What runs the containers?\nA:",
                           "max_tokens": 24, "temperature": 0}),
                    Duration::from_secs(30),
                )
            };
            (ask("auto").await, ask("tiny/qa").await)
        })
        .await
    };
    let (code, body) = first.expect("the first request");
    let cold = t0.elapsed();
    assert_eq!(code, 200, "{body}");
    let (text, done) = streamed_text(&body);
    assert!(done, "{body}");
    assert_eq!(text.chars().count(), 12, "{body}");
    assert_eq!(spec_replicas(ns, "auto"), 1);
    let (code, body) = unknown.expect("the unknown model's request");
    assert_eq!(code, 404, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "model_not_found");
    eprintln!("scale from zero: the first completion arrived {cold:?} after the request");
    let answer = |r: Result<(u16, String), String>| {
        let (code, body) = r.expect("a completion");
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (
            v["model"].as_str().unwrap_or_default().to_owned(),
            v["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let (base_name, base_text) = answer(from_base);
    let (adapter_name, adapter_text) = answer(from_adapter);
    // The replica answered as the adapter: it had it loaded (an unknown name is the base).
    assert!(base_name.starts_with("auto-server-"), "{base_name}");
    assert_eq!(adapter_name, "qa");
    assert_ne!(
        adapter_text, base_text,
        "the adapter's weights answer otherwise than the base's"
    );

    // Four clients without pause, one in flight per replica wanted: two replicas.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (base, stop) = (base.clone(), stop.clone());
        tokio::spawn(in_node(move || async move {
            let mut clients = Vec::new();
            for i in 0..4 {
                let (base, stop) = (base.clone(), stop.clone());
                clients.push(tokio::spawn(async move {
                    let mut served_by = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let r = post(
                            &format!("{base}/v1/completions"),
                            json!({"model": "auto", "prompt": format!("client {i}"),
                                   "max_tokens": 2000}),
                            Duration::from_secs(150),
                        )
                        .await;
                        match r {
                            Ok((200, body)) => {
                                let v: Value = serde_json::from_str(&body).unwrap();
                                served_by.push(v["model"].as_str().unwrap_or("").to_owned());
                            }
                            other => panic!("client {i}: {other:?}"),
                        }
                    }
                    served_by
                }));
            }
            let mut all = Vec::new();
            for c in clients {
                all.extend(c.await.unwrap());
            }
            all
        }))
    };
    until_replicas(ns, "auto", 2, Duration::from_secs(60)).await;
    until_ready(ns, "Server", "auto", "True", None).await;
    wait_for(
        "two ready replicas",
        Duration::from_secs(120),
        || async move {
            let s = kubectl_json(&["get", "server", "auto", "-n", ns])?;
            if s["status"]["replicas"] == 2 {
                Ok(Some(()))
            } else {
                Err(format!("{}", s["status"]))
            }
        },
    )
    .await;
    // An adapter added to the running Server: its Model's artifacts are copied into the
    // Server's folder, which the replicas mount already, and the gateway has a replica load
    // it through the engine's API. The replicas are the same pods: nothing rolled.
    let pods_of = || -> std::collections::BTreeSet<String> {
        let pods = kubectl_json(&["get", "pods", "-n", ns, "-l", "server=auto"]).unwrap();
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = pods_of();
    assert_eq!(before.len(), 2, "{before:?}");
    kubectl(&[
        "patch", "server", "auto", "-n", ns, "--type=json", "-p",
        r#"[{"op": "add", "path": "/spec/adapters/-", "value": {"name": "again", "model": {"name": "lm-qa"}}}]"#,
    ])
    .unwrap();
    wait_for(
        "the new adapter's copy",
        Duration::from_secs(60),
        || async move {
            let s = kubectl_json(&["get", "server", "auto", "-n", ns])?;
            let copied = s["status"]["adapters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if copied.iter().any(|a| a["name"] == "again") {
                Ok(Some(()))
            } else {
                Err(format!("status.adapters: {copied:?}"))
            }
        },
    )
    .await;
    let again = {
        let base = base.clone();
        in_node(move || async move {
            // The gateway routes it once its watch has the Server's new status.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r = post(
                    &format!("{base}/v1/completions"),
                    json!({"model": "tiny/again", "prompt": "Q: What runs the containers?\nA:",
                           "max_tokens": 24, "temperature": 0}),
                    Duration::from_secs(60),
                )
                .await;
                if !matches!(&r, Ok((404, _))) || Instant::now() > deadline {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await
    };
    let (again_name, again_text) = answer(again);
    assert_eq!(again_name, "again");
    assert_eq!(
        again_text, adapter_text,
        "the same weights as adapter qa, loaded at run time"
    );
    assert_eq!(pods_of(), before, "adding an adapter rolled the replicas");

    // Both replicas answer (the reference server names itself by its pod's hostname).
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let served_by = load.await.unwrap();
    let pods: std::collections::BTreeSet<&String> = served_by.iter().collect();
    assert!(
        pods.len() == 2 && pods.iter().all(|p| p.starts_with("auto-server-")),
        "replicas that answered: {pods:?}"
    );

    // Idle for the 8-second delay: back to zero.
    until_replicas(ns, "auto", 0, Duration::from_secs(60)).await;
    until_ready(ns, "Server", "auto", "False", Some("ScaledToZero")).await;
}
