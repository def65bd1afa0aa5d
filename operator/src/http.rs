//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Metrics of the process: resident memory (read at each scrape), leadership and build.
#[derive(Clone)]
pub struct ProcessMetrics {
    resident: Gauge,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
}

impl ProcessMetrics {
    pub fn new(registry: &mut Registry, version: &str) -> ProcessMetrics {
        let m = ProcessMetrics {
            resident: Gauge::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.resident.clone(),
        );
        registry.register(
            "substratus_leader",
            "1 while this replica holds the leader Lease (or runs without leader election), else 0",
            m.leader.clone(),
        );
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        info.get_or_create(&vec![("version".to_owned(), version.to_owned())])
            .set(1);
        registry.register("substratus_build_info", "The operator's version", info);
        m
    }

    /// Reads the resident memory from `/proc/self/status`.
    fn refresh(&self) {
        if let Some(bytes) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(resident_bytes)
        {
            self.resident.set(bytes);
        }
    }
}

/// The `VmRSS` of a `/proc/<pid>/status` text, in bytes.
fn resident_bytes(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn serve(
    addr: SocketAddr,
    app: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(%addr, error = %e, "HTTP server failed");
            }
        }
        Err(e) => tracing::error!(%addr, error = %e, "cannot listen"),
    }
}

/// Serves the metrics registry at `/metrics`.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Registry>,
    process: ProcessMetrics,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            process.refresh();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    );
    serve(addr, app, stop).await;
}

/// `/healthz` answers while the process runs; `/readyz` once the process is set up (client and
/// cloud backend), whether or not it holds the leader Lease.
pub async fn serve_health(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    serve(addr, app, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_report_memory_leadership_and_version() {
        assert_eq!(
            resident_bytes("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   35112 kB\nThreads:\t4\n"),
            Some(35_112 * 1024)
        );
        assert_eq!(resident_bytes("Name:\tx\n"), None);
        let mut registry = Registry::default();
        let m = ProcessMetrics::new(&mut registry, "1.2.3");
        m.refresh();
        m.leader.set(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("substratus_leader 1\n"), "{text}");
        assert!(
            text.contains("substratus_build_info{version=\"1.2.3\"} 1\n"),
            "{text}"
        );
        let rss: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(rss > 1 << 20, "this process's resident memory: {rss}");
    }
}
