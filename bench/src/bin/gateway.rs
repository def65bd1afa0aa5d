//! `gateway-bench`: what the gateway adds to a request, side by side with calling the replica
//! directly, in one run on this machine.
//!
//! The replica is a minimal HTTP server on loopback answering a fixed completion, so that
//! what is measured is the gateway (read the body, find the model, pick a replica, forward,
//! stream back), not a model. The gateway runs in this process on its own runtime, with the
//! routing table the watches would build for one Server with `--replicas` replicas.
//!
//!   cargo run --release -p substratus-bench --bin gateway-bench -- --requests 5000 --concurrency 32

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::Router;
use axum::routing::post;
use clap::Parser;
use serde_json::json;
use substratus_gateway::load::Loads;
use substratus_gateway::metrics::Metrics;
use substratus_gateway::table::Table;
use substratus_gateway::{Gateway, Options};

#[derive(Parser)]
#[command(
    name = "gateway-bench",
    about = "The gateway's added latency and its throughput"
)]
struct Args {
    /// Sequential requests for the latency figures (per path).
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Clients at once for the throughput figures.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of the throughput run (per path).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Replicas behind the gateway.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
}

const COMPLETION: &str = r#"{"id":"cmpl-1","object":"text_completion","created":0,"model":"bench","choices":[{"index":0,"text":" a short answer","logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;

async fn replica() -> SocketAddr {
    let app = Router::new().route(
        "/v1/completions",
        post(|| async { ([("content-type", "application/json")], COMPLETION) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn table(replicas: &[SocketAddr]) -> Table {
    let server: substratus_crds::Server = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Server",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"image": "i", "model": {"name": "m"}},
    }))
    .unwrap();
    let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> = replicas
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("bench-server-{i}"), "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": "bench-server", "server": "bench"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": a.port()}],
                "endpoints": [{"addresses": [a.ip().to_string()], "conditions": {"ready": true}}],
            }))
            .unwrap()
        })
        .collect();
    Table::build([&server], &slices)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latencies(client: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let body = json!({"model": "bench", "prompt": "Q: What is a gateway?\nA:", "max_tokens": 3});
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.post(url).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.bytes().await.unwrap();
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn throughput(url: &str, concurrency: usize, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let body = json!({"model": "bench", "prompt": "Q: What is a gateway?\nA:"});
            let mut done = 0u64;
            while Instant::now() < deadline {
                let r = client.post(&url).json(&body).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
                done += 1;
            }
            done
        }));
    }
    let t = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / t.elapsed().as_secs_f64()
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Replicas and the gateway on one runtime (thread pool of two), clients on another.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (direct, gateway_url) = server_rt.block_on(async {
        let mut replicas = Vec::new();
        for _ in 0..args.replicas.max(1) {
            replicas.push(replica().await);
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(table(&replicas)));
        // The sender lives as long as the runtime: the table never changes.
        std::mem::forget(_tx);
        let gw = Gateway::new(
            rx,
            Loads::default(),
            Metrics::new(&mut registry),
            Options::default(),
            Arc::new(tokio::sync::Notify::new()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, gw.router()).await.unwrap() });
        (
            format!("http://{}/v1/completions", replicas[0]),
            format!("http://{addr}/v1/completions"),
        )
    });
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    client_rt.block_on(async {
        let client = reqwest::Client::new();
        // Warm both paths (connections, pools).
        latencies(&client, &direct, 200).await;
        latencies(&client, &gateway_url, 200).await;
        let d = latencies(&client, &direct, args.requests).await;
        let g = latencies(&client, &gateway_url, args.requests).await;
        let dt = throughput(&direct, args.concurrency, args.seconds).await;
        let gt = throughput(&gateway_url, args.concurrency, args.seconds).await;
        let ms = |x: Duration| x.as_secs_f64() * 1000.0;
        println!(
            "gateway-bench: {} sequential requests per path, then {} clients for {} s per path; {} replica(s); 2 cores shared by clients, gateway and replicas",
            args.requests, args.concurrency, args.seconds, args.replicas
        );
        println!("| | direct to a replica | through the gateway | added |");
        println!("|---|---|---|---|");
        for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let (a, b) = (percentile(&d, p), percentile(&g, p));
            println!(
                "| latency {name} | {:.3} ms | {:.3} ms | {:+.3} ms |",
                ms(a),
                ms(b),
                ms(b) - ms(a)
            );
        }
        println!(
            "| throughput, {} clients | {:.0} req/s | {:.0} req/s | {:.0}% of direct |",
            args.concurrency,
            dt,
            gt,
            gt / dt * 100.0
        );
    });
    Ok(())
}
