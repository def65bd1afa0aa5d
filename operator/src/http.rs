//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

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
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
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
