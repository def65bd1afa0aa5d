//! The gateway against the real API server and the operator: a request for a Server scaled
//! to zero is held, the gateway writes `spec.replicas: 1` through the scale subresource, the
//! pod waits for a GPU node that never comes, and the request fails with the Server's own
//! reason; once idle for the delay, the Server goes back to zero. Two replicas of the
//! gateway add up their loads and agree on the replicas. The Servers here never get a
//! ready replica (their pods need 16 GPUs, more than any node has), so nothing is forwarded:
//! forwarding to real replicas is tested on the real node (`real_node/gateway.rs`) and
//! against loopback replicas (`gateway/tests/forwarding.rs`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use substratus_gateway::peers::PeerSource;
use substratus_gateway::run::Settings;
use substratus_tests::cluster::{TestNamespace, client, wait_for};
use substratus_tests::objects::{WAIT, create, object, status, wait_ready, wait_reason};
use substratus_tests::operator::{RunningOperator, kind_cloud};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spec_replicas(c: &kube::Client, ns: &str, name: &str) -> Result<i64, String> {
    let api = substratus_tests::objects::api(c, ns, "Server");
    let s = api.get(name).await.map_err(|e| e.to_string())?;
    s.data["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| format!("no spec.replicas: {:?}", s.data))
}

#[tokio::test]
async fn a_held_request_scales_a_server_from_zero_and_fails_with_its_reason_when_no_gpu_comes() {
    let ns = TestNamespace::new("gateway");
    let ns = ns.name.as_str();
    let c = client().await;
    let op = RunningOperator::start(ns, kind_cloud("gcp")).await;
    create(&c, ns, object("Model", "base", json!({"image": "loader"}))).await;
    wait_ready(&c, ns, "Model", "base").await;
    let gpus = json!({"cpu": 0, "memory": 0, "disk": 0, "gpu": {"type": "nvidia-l4", "count": 16}});
    create(
        &c,
        ns,
        object(
            "Server",
            "big",
            json!({"image": "srv", "model": {"name": "base"}, "replicas": 0,
                   "servedModelNames": ["big-chat"], "resources": gpus,
                   "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "scaleDownDelaySeconds": 3}}),
        ),
    )
    .await;
    let message = wait_reason(&c, ns, "Server", "big", "ScaledToZero").await;
    assert!(message.contains("next request"), "{message}");

    // Two replicas of the gateway, each counting the other's load.
    let (port, peer_port) = (free_port(), free_port());
    let mut registries = Vec::new();
    let mut stops = Vec::new();
    let mut servings = Vec::new();
    for (own, peer) in [(port, peer_port), (peer_port, port)] {
        let settings = Settings {
            listen: ([127, 0, 0, 1], own).into(),
            namespace: Some(ns.to_owned()),
            scale_every: Duration::from_millis(200),
            peers: PeerSource::Fixed(vec![([127, 0, 0, 1], peer).into()]),
            options: substratus_gateway::Options {
                hold_timeout: Duration::from_secs(20),
                ..Default::default()
            },
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let gateway = substratus_gateway::run::prepare(c.clone(), settings, &mut registry);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        servings.push(tokio::spawn(gateway.serve(async {
            let _ = stop_rx.await;
        })));
        registries.push(registry);
        stops.push(stop_tx);
    }
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // The table fills from the watches: both names are listed.
    let models = wait_for("the gateway to list the Server", WAIT, || async {
        let r = http.get(format!("{url}/v1/models")).send().await;
        let body: Value = match r {
            Ok(r) => r.json().await.map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        if body["data"].as_array().is_some_and(|d| d.len() == 2) {
            Ok(Some(body))
        } else {
            Err(body.to_string())
        }
    })
    .await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["big", "big-chat"]);
    let r = http
        .post(format!("{url}/v1/completions"))
        .json(&json!({"model": "small", "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A request for the Server at zero is held; the gateway scales it to one at once.
    let t0 = Instant::now();
    let held = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .json(
                    &json!({"model": "big-chat", "messages": [{"role": "user", "content": "hi"}]}),
                )
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
        }
    });
    wait_for("the gateway to write spec.replicas 1", WAIT, || async {
        match spec_replicas(&c, ns, "big").await? {
            1 => Ok(Some(())),
            n => Err(format!("spec.replicas {n}")),
        }
    })
    .await;
    let scaled_after = t0.elapsed();
    assert!(!held.is_finished(), "the request is still held");
    // The pod needs 16 GPUs: the Server says so while the request waits.
    let why = wait_reason(&c, ns, "Server", "big", "Unschedulable").await;
    assert!(why.contains("nvidia.com/gpu"), "{why}");

    let (code, retry, body) = held.await.unwrap();
    assert_eq!((code, retry.as_deref()), (503, Some("30")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{ns}/big"))
            && message.contains("Unschedulable")
            && message.contains("nvidia.com/gpu"),
        "the held request's error carries the Server's reason: {message}"
    );
    assert!(t0.elapsed() >= Duration::from_secs(20));

    // Idle for the 3-second delay: back to zero, and the status says why.
    wait_for(
        "the gateway to scale the idle Server to zero",
        WAIT,
        || async {
            match spec_replicas(&c, ns, "big").await? {
                0 => Ok(Some(())),
                n => Err(format!("spec.replicas {n}")),
            }
        },
    )
    .await;
    wait_reason(&c, ns, "Server", "big", "ScaledToZero").await;
    let s = status(&c, ns, "Server", "big").await;
    assert_eq!(s["ready"], false, "{s}");

    // Between them, the two replicas wrote each change once or more, and the request's 503
    // and the unknown model's 404 were counted where they were answered.
    let sum = |line: &str| -> f64 {
        registries
            .iter()
            .map(|r| {
                let mut text = String::new();
                prometheus_client::encoding::text::encode(&mut text, r).unwrap();
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix(line)
                            .map(|v| v.trim().parse::<f64>().unwrap())
                    })
                    .unwrap_or(0.0)
            })
            .sum()
    };
    for (line, at_least) in [
        (
            format!(
                r#"substratus_gateway_scale_total{{namespace="{ns}",server="big",direction="up"}}"#
            ),
            1.0,
        ),
        (
            format!(
                r#"substratus_gateway_scale_total{{namespace="{ns}",server="big",direction="down"}}"#
            ),
            1.0,
        ),
        (
            format!(
                r#"substratus_gateway_requests_total{{namespace="{ns}",server="big",code="503"}}"#
            ),
            1.0,
        ),
        (
            r#"substratus_gateway_requests_total{namespace="",server="",code="404"}"#.to_owned(),
            1.0,
        ),
    ] {
        assert!(sum(&line) >= at_least, "{line}");
    }

    // Two requests held on each replica of a Server sized for one request per replica: each
    // replica counts four, and the Server gets four replicas (two each if they did not agree).
    create(
        &c,
        ns,
        object(
            "Server",
            "wide",
            json!({"image": "srv", "model": {"name": "base"}, "replicas": 0, "resources": gpus,
                   "autoscaling": {"minReplicas": 0, "maxReplicas": 6, "targetRequests": 1,
                                   "scaleDownDelaySeconds": 60}}),
        ),
    )
    .await;
    wait_reason(&c, ns, "Server", "wide", "ScaledToZero").await;
    let mut held = Vec::new();
    for p in [port, port, peer_port, peer_port] {
        let http = http.clone();
        held.push(tokio::spawn(async move {
            http.post(format!("http://127.0.0.1:{p}/v1/completions"))
                .json(&json!({"model": "wide", "prompt": "x"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    wait_for(
        "the agreeing gateways to write spec.replicas 4",
        WAIT,
        || async {
            match spec_replicas(&c, ns, "wide").await? {
                4 => Ok(Some(())),
                n => Err(format!("spec.replicas {n}")),
            }
        },
    )
    .await;
    // And they stay there: no replica writes its own half.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(spec_replicas(&c, ns, "wide").await.unwrap(), 4);
    for h in held {
        h.abort();
    }
    eprintln!("scaled 0 → 1 {scaled_after:?} after the request arrived");
    for stop in stops {
        let _ = stop.send(());
    }
    for serving in servings {
        let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
    }
    op.stop().await;
}
