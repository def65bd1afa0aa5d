//! The gateway's HTTP front against real HTTP replicas on loopback: routing by model, the
//! OpenAI errors, streaming passed through as written, replicas replaced when they fail,
//! requests held until a replica is ready (or failed with the Server's reason), and the load
//! spread. The routing table is given directly, as the watches would build it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
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

/// A replica: answers with its name and the model asked for; streams three chunks a second
/// apart when asked to; waits `delay_ms` first when asked to.
#[derive(Clone)]
struct Replica {
    name: &'static str,
    served: Arc<AtomicUsize>,
    status: u16,
}

async fn replica_answer(State(r): State<Replica>, body: Bytes) -> axum::response::Response {
    r.served.fetch_add(1, Ordering::SeqCst);
    let req: Value = serde_json::from_slice(&body).unwrap();
    if let Some(ms) = req["delay_ms"].as_u64() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if r.status != 200 {
        return axum::response::Response::builder()
            .status(r.status)
            .body(Body::from("{\"error\": {\"message\": \"loading\"}}"))
            .unwrap();
    }
    if req["stream"] == true {
        let name = r.name;
        let chunks = futures::stream::unfold(0u32, move |i| async move {
            if i == 3 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(format!("data: {name}-{i}\n\n"))),
                i + 1,
            ))
        });
        return axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(chunks))
            .unwrap();
    }
    axum::Json(json!({"replica": r.name, "model": req["model"]})).into_response()
}

async fn start_replica(name: &'static str, status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/v1/completions", post(replica_answer))
        .route("/v1/chat/completions", post(replica_answer))
        .with_state(Replica {
            name,
            served: served.clone(),
            status,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, served)
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn server(name: &str, spec: Value, not_ready: Option<&str>) -> Server {
    let mut spec = spec;
    spec["image"] = json!("tinylm");
    spec["model"] = json!({"name": "m"});
    let mut s: Server = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Server",
        "metadata": {"name": name, "namespace": "team"}, "spec": spec,
    }))
    .unwrap();
    if let Some(why) = not_ready {
        let (reason, message) = why.split_once(": ").unwrap();
        s.status = Some(
            serde_json::from_value(json!({"ready": false, "conditions": [{
                "type": "Ready", "status": "False", "reason": reason, "message": message,
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
            .unwrap(),
        );
    }
    s
}

struct Running {
    url: String,
    table: watch::Sender<Arc<Table>>,
    loads: Loads,
    wake: Arc<Notify>,
    registry: Arc<Registry>,
}

async fn gateway(table: Table, opts: Options) -> Running {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let (tx, rx) = watch::channel(Arc::new(table));
    let loads = Loads::default();
    let wake = Arc::new(Notify::new());
    let gw = Gateway::new(rx, loads.clone(), metrics, opts, wake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gw.router()).await.unwrap() });
    Running {
        url,
        table: tx,
        loads,
        wake,
        registry: Arc::new(registry),
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// POSTs `body` to `path`; the status, the Retry-After header and the JSON body.
async fn post_json(url: &str, path: &str, body: Value) -> (u16, Option<String>, Value) {
    let req = hyper::Request::post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn requests_reach_the_server_their_model_names_and_unknown_models_get_404() {
    let (a, _) = start_replica("alpha-0", 200).await;
    let (b, _) = start_replica("beta-0", 200).await;
    let servers = [
        server("alpha", json!({}), None),
        server(
            "beta",
            json!({"servedModelNames": ["b-alias"],
                   "adapters": [{"name": "sql", "model": {"name": "beta-sql"}}]}),
            None,
        ),
    ];
    let slices = [slice("alpha", &[a]), slice("beta", &[b])].concat();
    let g = gateway(Table::build(&servers, &slices), Options::default()).await;

    let (s, _, body) = post_json(
        &g.url,
        "/v1/completions",
        json!({"model": "alpha", "prompt": "x"}),
    )
    .await;
    assert_eq!(
        (s, body["replica"].as_str()),
        (200, Some("alpha-0")),
        "{body}"
    );
    let (s, _, body) = post_json(
        &g.url,
        "/v1/chat/completions",
        json!({"model": "b-alias", "messages": []}),
    )
    .await;
    assert_eq!(
        (s, body["replica"].as_str()),
        (200, Some("beta-0")),
        "{body}"
    );
    // The model field reaches the replica unchanged.
    assert_eq!(body["model"], "b-alias");
    let (s, _, body) = post_json(
        &g.url,
        "/v1/completions",
        json!({"model": "beta/chat", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 404, "an adapter the Server does not name: {body}");
    let (s, _, body) = post_json(
        &g.url,
        "/v1/completions",
        json!({"model": "beta/sql", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 404, "an adapter not copied yet is not routed: {body}");

    let (s, _, body) = post_json(
        &g.url,
        "/v1/completions",
        json!({"model": "nope", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    let (s, _, body) = post_json(&g.url, "/v1/completions", json!({"prompt": "x"})).await;
    assert_eq!(
        (s, body["error"]["param"].as_str()),
        (400, Some("model")),
        "{body}"
    );

    let resp = client()
        .request(
            hyper::Request::get(format!("{}/v1/models", g.url))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let list: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // `beta/sql` is listed once its copy is in the Server's status (tests/adapters.rs).
    assert_eq!(ids, ["alpha", "b-alias", "beta"]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &g.registry).unwrap();
    assert!(
        text.contains(
            r#"substratus_gateway_requests_total{namespace="team",server="alpha",code="200"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_stream_arrives_as_the_replica_writes_it() {
    let (a, _) = start_replica("alpha-0", 200).await;
    let servers = [server("alpha", json!({}), None)];
    let g = gateway(
        Table::build(&servers, &slice("alpha", &[a])),
        Options::default(),
    )
    .await;
    let t0 = Instant::now();
    let req = hyper::Request::post(format!("{}/v1/completions", g.url))
        .body(Full::new(Bytes::from(
            json!({"model": "alpha", "prompt": "x", "stream": true}).to_string(),
        )))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push((t0.elapsed(), String::from_utf8(data.to_vec()).unwrap()));
        }
    }
    let text: String = arrivals.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        text,
        "data: alpha-0-0\n\ndata: alpha-0-1\n\ndata: alpha-0-2\n\n"
    );
    // The replica waits a second between chunks: the first chunk is through long before the
    // second is written, and the stream ends only after the last.
    assert!(arrivals[0].0 < Duration::from_millis(800), "{arrivals:?}");
    assert!(
        arrivals.last().unwrap().0 >= Duration::from_millis(2000),
        "{arrivals:?}"
    );
    // The request counted as in flight until its end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(g.loads.snapshot().is_empty(), "{:?}", g.loads.snapshot());
}

#[tokio::test]
async fn a_replica_that_refuses_or_answers_503_is_replaced_by_another() {
    let (live, served) = start_replica("live", 200).await;
    let (loading, loading_served) = start_replica("loading", 503).await;
    let dead = closed_port().await;
    let servers = [server("alpha", json!({}), None)];
    let g = gateway(
        Table::build(&servers, &slice("alpha", &[dead, loading, live])),
        Options::default(),
    )
    .await;
    for i in 0..9 {
        let (s, _, body) = post_json(
            &g.url,
            "/v1/completions",
            json!({"model": "alpha", "prompt": i.to_string()}),
        )
        .await;
        assert_eq!(
            (s, body["replica"].as_str()),
            (200, Some("live")),
            "request {i}: {body}"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 9);
    assert!(
        loading_served.load(Ordering::SeqCst) > 0,
        "least-load took turns"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &g.registry).unwrap();
    assert!(
        text.contains(r#"substratus_gateway_retries_total{namespace="team",server="alpha"}"#),
        "{text}"
    );

    // With no live replica left, the last answer is passed on as the replica gave it.
    g.table.send_replace(Arc::new(Table::build(
        &servers,
        &slice("alpha", &[dead, loading]),
    )));
    let (s, _, body) = post_json(
        &g.url,
        "/v1/completions",
        json!({"model": "alpha", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["error"]["message"], "loading");
    // Only a refused connection: 502 naming the replica.
    g.table
        .send_replace(Arc::new(Table::build(&servers, &slice("alpha", &[dead]))));
    let (s, _, body) = post_json(
        &g.url,
        "/v1/completions",
        json!({"model": "alpha", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&dead.to_string()),
        "{body}"
    );
}

#[tokio::test]
async fn a_request_for_a_server_at_zero_is_held_until_a_replica_is_ready() {
    let (a, served) = start_replica("alpha-0", 200).await;
    let servers = [server(
        "alpha",
        json!({"replicas": 0, "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}),
        Some("ScaledToZero: scaled to zero while idle"),
    )];
    let g = gateway(Table::build(&servers, []), Options::default()).await;
    let woken = g.wake.clone();
    let url = g.url.clone();
    let request = tokio::spawn(async move {
        post_json(
            &url,
            "/v1/completions",
            json!({"model": "alpha", "prompt": "x"}),
        )
        .await
    });
    // The scaler is woken at once and the request counts as held.
    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .expect("the scaler is woken by a held request");
    let key = substratus_gateway::table::ServerKey {
        namespace: "team".into(),
        name: "alpha".into(),
    };
    assert_eq!(g.loads.snapshot().get(&key), Some(&(0, 1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished());
    assert_eq!(served.load(Ordering::SeqCst), 0);

    // A replica becomes ready: the held request goes to it.
    g.table
        .send_replace(Arc::new(Table::build(&servers, &slice("alpha", &[a]))));
    let (s, _, body) = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (s, body["replica"].as_str()),
        (200, Some("alpha-0")),
        "{body}"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &g.registry).unwrap();
    assert!(
        text.contains(
            r#"substratus_gateway_queue_wait_seconds_count{namespace="team",server="alpha"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_held_request_fails_after_the_hold_timeout_with_the_servers_reason() {
    let servers = [server(
        "big",
        json!({"replicas": 1, "autoscaling": {"minReplicas": 0, "maxReplicas": 1}}),
        Some("Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu"),
    )];
    let opts = Options {
        hold_timeout: Duration::from_millis(700),
        max_held: 1,
        ..Default::default()
    };
    let g = gateway(Table::build(&servers, []), opts).await;
    let url = g.url.clone();
    let t0 = Instant::now();
    let first = tokio::spawn(async move {
        post_json(
            &url,
            "/v1/completions",
            json!({"model": "big", "prompt": "x"}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The queue holds one: a second request is refused at once.
    let (s, retry, body) = post_json(
        &g.url,
        "/v1/completions",
        json!({"model": "big", "prompt": "y"}),
    )
    .await;
    assert_eq!((s, retry.as_deref()), (503, Some("5")), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already wait"),
        "{body}"
    );

    let (s, retry, body) = first.await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(700));
    assert_eq!((s, retry.as_deref()), (503, Some("30")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("team/big")
            && message
                .contains("Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu"),
        "{message}"
    );
    assert_eq!(body["error"]["type"], "server_error");

    // A Server at zero that nothing scales is refused without waiting.
    let servers = [server(
        "off",
        json!({"replicas": 0}),
        Some("DeploymentNotReady: spec.replicas is 0"),
    )];
    g.table.send_replace(Arc::new(Table::build(&servers, [])));
    let t0 = Instant::now();
    let (s, _, body) = post_json(
        &g.url,
        "/v1/completions",
        json!({"model": "off", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 503, "{body}");
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no spec.autoscaling"),
        "{body}"
    );
}

#[tokio::test]
async fn concurrent_requests_spread_over_the_replicas_by_load() {
    let (a, served_a) = start_replica("a", 200).await;
    let (b, served_b) = start_replica("b", 200).await;
    let servers = [server("alpha", json!({}), None)];
    let g = gateway(
        Table::build(&servers, &slice("alpha", &[a, b])),
        Options::default(),
    )
    .await;
    let mut requests = Vec::new();
    for i in 0..8 {
        let url = g.url.clone();
        requests.push(tokio::spawn(async move {
            post_json(
                &url,
                "/v1/completions",
                json!({"model": "alpha", "prompt": i.to_string(), "delay_ms": 600}),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = substratus_gateway::table::ServerKey {
        namespace: "team".into(),
        name: "alpha".into(),
    };
    assert_eq!(g.loads.snapshot().get(&key), Some(&(8, 0)));
    assert_eq!((g.loads.replica(&key, a), g.loads.replica(&key, b)), (4, 4));
    for r in requests {
        assert_eq!(r.await.unwrap().0, 200);
    }
    assert_eq!(
        (
            served_a.load(Ordering::SeqCst),
            served_b.load(Ordering::SeqCst)
        ),
        (4, 4)
    );
}
