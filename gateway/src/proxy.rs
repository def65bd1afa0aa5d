//! The HTTP front: `/v1/models`, and `/v1/completions`, `/v1/chat/completions`,
//! `/v1/embeddings` forwarded to a ready replica of the Server the `model` names.
//!
//! A request for a Server without a ready replica is held (at most `max_held` per Server,
//! at most `hold_timeout`) while the scaler starts one; it then fails with 503, a
//! `Retry-After`, and the Server's own reason (e.g. `Unschedulable: 0/3 nodes are available:
//! 3 Insufficient nvidia.com/gpu`). A replica that refuses the connection or answers 502/503/504
//! before any byte of the body is passed to the client is replaced by another one, up to
//! `attempts` replicas. The response body streams through as the replica writes it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, watch};

use crate::adapters::{Adapters, Loaded};
use crate::load::{InFlight, Loads};
use crate::metrics::{Metrics, RequestLabels, ServerLabels};
use crate::openai::{self, ApiError};
use crate::pick::{Candidate, pick};
use crate::table::{Lookup, Route, Table};

/// Limits of the gateway.
#[derive(Clone, Debug)]
pub struct Options {
    /// Longest a request waits for a ready replica.
    pub hold_timeout: Duration,
    /// Most requests held per Server; more are refused at once with 503.
    pub max_held: u32,
    /// Largest request body read.
    pub max_body_bytes: usize,
    /// Replicas tried per request.
    pub attempts: usize,
    /// Connection timeout to a replica.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            hold_timeout: Duration::from_secs(300),
            max_held: 1000,
            max_body_bytes: 16 << 20,
            attempts: 3,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The shared state of the HTTP front.
pub struct Gateway {
    table: watch::Receiver<Arc<Table>>,
    loads: Loads,
    metrics: Metrics,
    client: Client<HttpConnector, Full<Bytes>>,
    adapters: Adapters,
    opts: Options,
    /// Woken when a request is held, so that a Server at zero starts at once.
    wake_scaler: Arc<Notify>,
    turn: AtomicUsize,
}

impl Gateway {
    pub fn new(
        table: watch::Receiver<Arc<Table>>,
        loads: Loads,
        metrics: Metrics,
        opts: Options,
        wake_scaler: Arc<Notify>,
    ) -> Arc<Gateway> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(opts.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Arc::new(Gateway {
            table,
            loads,
            metrics,
            adapters: Adapters::new(client.clone()),
            client,
            opts,
            wake_scaler,
            turn: AtomicUsize::new(0),
        })
    }

    pub fn router(self: Arc<Gateway>) -> Router {
        Router::new()
            .route("/v1/models", get(models))
            .route("/v1/completions", post(forward))
            .route("/v1/chat/completions", post(forward))
            .route("/v1/embeddings", post(forward))
            .route("/internal/load", get(load))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self)
    }

    /// Waits until the `model`'s Server has a ready replica, holding the request meanwhile.
    async fn ready_route(&self, model: &str, arrived: Instant) -> Result<Route, ApiError> {
        let mut table = self.table.clone();
        let deadline = tokio::time::Instant::from_std(arrived + self.opts.hold_timeout);
        let mut held = None;
        loop {
            let snapshot = table.borrow_and_update().clone();
            let route = match snapshot.lookup(model) {
                Lookup::Found(route) => route,
                Lookup::Unknown => return Err(ApiError::unknown_model(model)),
                Lookup::Ambiguous(keys) => {
                    let mut e = ApiError::bad_request(
                        format!(
                            "the model `{model}` is served by several Servers ({}): the gateway cannot choose; give each a distinct name in spec.servedModelNames",
                            keys.iter()
                                .map(|k| k.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        Some("model"),
                    );
                    e.code = Some("model_ambiguous");
                    return Err(e);
                }
            };
            if !route.endpoints.is_empty() {
                if held.is_some() {
                    self.metrics
                        .queue_wait
                        .get_or_create(&ServerLabels::from(&route.key))
                        .observe(arrived.elapsed().as_secs_f64());
                }
                return Ok(route.clone());
            }
            if route.replicas == 0 && route.autoscaling.is_none() {
                return Err(ApiError::unavailable(
                    format!(
                        "Server {} has spec.replicas 0 and no spec.autoscaling: nothing starts a replica",
                        route.key
                    ),
                    60,
                ));
            }
            if held.is_none() {
                held = Some(
                    self.loads
                        .hold(&route.key, self.opts.max_held)
                        .ok_or_else(|| {
                            ApiError::unavailable(
                                format!(
                                    "{} requests already wait for a replica of Server {}",
                                    self.opts.max_held, route.key
                                ),
                                5,
                            )
                        })?,
                );
                self.wake_scaler.notify_one();
            }
            let why = route
                .not_ready
                .clone()
                .unwrap_or_else(|| "waiting for a ready replica".into());
            let key = route.key.clone();
            match tokio::time::timeout_at(deadline, table.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    return Err(ApiError::unavailable("the gateway is shutting down", 1));
                }
                Err(_) => {
                    let latest = table.borrow().clone();
                    let why = latest
                        .route(&key)
                        .and_then(|r| r.not_ready.clone())
                        .unwrap_or(why);
                    return Err(ApiError::unavailable(
                        format!(
                            "no replica of Server {key} became ready within {}s: {why}",
                            self.opts.hold_timeout.as_secs()
                        ),
                        30,
                    ));
                }
            }
        }
    }
}

async fn models(State(gw): State<Arc<Gateway>>) -> Response {
    let table = gw.table.borrow().clone();
    axum::Json(openai::model_list(table.model_ids())).into_response()
}

/// This replica's load, for its peers (see [`crate::peers`]).
async fn load(State(gw): State<Arc<Gateway>>) -> Response {
    axum::Json(crate::peers::report(&gw.loads.snapshot())).into_response()
}

fn error_response(e: &ApiError) -> Response {
    let mut r = (
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(e.body()),
    )
        .into_response();
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

async fn forward(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let arrived = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, gw.opts.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let mut e = ApiError::bad_request(
                format!(
                    "the request body is larger than {} bytes (or was cut off)",
                    gw.opts.max_body_bytes
                ),
                None,
            );
            e.status = 413;
            return error_response(&e);
        }
    };
    let count = |server: &str, namespace: &str, code: u16| {
        gw.metrics
            .requests
            .get_or_create(&RequestLabels {
                namespace: namespace.to_owned(),
                server: server.to_owned(),
                code,
            })
            .inc();
    };
    let inbound = match openai::read(&body) {
        Ok(i) => i,
        Err(e) => {
            count("", "", e.status);
            return error_response(&e);
        }
    };
    let route = match gw.ready_route(&inbound.model, arrived).await {
        Ok(r) => r,
        Err(e) => {
            let key = match gw.table.borrow().lookup(&inbound.model) {
                Lookup::Found(r) => Some(r.key.clone()),
                _ => None,
            };
            match key {
                Some(k) => count(&k.name, &k.namespace, e.status),
                None => count("", "", e.status),
            }
            return error_response(&e);
        }
    };
    // `<server>/<adapter>`: the replica is asked for the adapter by its own name, once it
    // has loaded it from the folder the Server's status names.
    let adapter =
        openai::adapter_of(&inbound.model).and_then(|a| Some((a, route.adapters.get(a)?.as_str())));
    let body = match adapter {
        Some((adapter, _)) => match openai::with_model(&body, adapter) {
            Ok(b) => axum::body::Bytes::from(b),
            Err(e) => {
                count(&route.key.name, &route.key.namespace, e.status);
                return error_response(&e);
            }
        },
        None => body,
    };
    let labels = ServerLabels::from(&route.key);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);

    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut failure = String::new();
    // A replica's 502/503/504, passed on if no other replica answers better.
    let mut refusal: Option<(hyper::Response<hyper::body::Incoming>, InFlight)> = None;
    let pass_on = |resp: hyper::Response<hyper::body::Incoming>, guard: InFlight| {
        count(
            &route.key.name,
            &route.key.namespace,
            resp.status().as_u16(),
        );
        let ttfb = gw.metrics.time_to_first_byte.get_or_create(&labels).clone();
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = Tracked {
            inner: incoming,
            guard: Some(guard),
            first: Some((arrived, ttfb)),
        };
        Response::from_parts(parts, Body::new(body))
    };
    for _ in 0..gw.opts.attempts.max(1) {
        let candidates: Vec<Candidate> = route
            .endpoints
            .iter()
            .filter(|a| !tried.contains(a))
            .map(|a| Candidate {
                addr: *a,
                load: gw.loads.replica(&route.key, *a),
            })
            .collect();
        let turn = gw.turn.fetch_add(1, Ordering::Relaxed);
        let Some(addr) = pick(&route.routing, &candidates, &inbound.prefix, turn) else {
            break;
        };
        if !tried.is_empty() {
            gw.metrics.retries.get_or_create(&labels).inc();
        }
        tried.push(addr);
        let guard = gw.loads.forward(&route.key, addr);
        if let Some((name, folder)) = adapter {
            match gw.adapters.ensure(addr, name, folder).await {
                Ok(Loaded::Already) => {}
                Ok(Loaded::Now) => {
                    gw.metrics.adapter_loads.get_or_create(&labels).inc();
                    tracing::info!(server = %route.key, %addr, adapter = name, folder, "adapter loaded");
                }
                Err(e) => {
                    failure = e;
                    tracing::warn!(server = %route.key, %failure, "adapter not loaded");
                    continue;
                }
            }
        }
        let mut upstream = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(body.clone()))
            .expect("a method, an authority of an address and a path make a request");
        *upstream.headers_mut() = headers.clone();
        match gw.client.request(upstream).await {
            Ok(resp)
                if matches!(
                    resp.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) =>
            {
                failure = format!("replica {addr} answered {}", resp.status());
                refusal = Some((resp, guard));
            }
            Ok(resp) => return pass_on(resp, guard),
            Err(e) => {
                failure = format!("replica {addr}: {e}");
            }
        }
        tracing::debug!(server = %route.key, %failure, "trying another replica");
    }
    if let Some((resp, guard)) = refusal {
        return pass_on(resp, guard);
    }
    let e = ApiError::bad_gateway(format!(
        "no replica of Server {} answered ({} tried): {failure}",
        route.key,
        tried.len()
    ));
    count(&route.key.name, &route.key.namespace, e.status);
    error_response(&e)
}

/// A replica's response body, passed on frame by frame; counts the request in flight until
/// its end (or until the client goes away and the body is dropped).
struct Tracked {
    inner: hyper::body::Incoming,
    guard: Option<InFlight>,
    first: Option<(Instant, Histogram)>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some((arrived, h)) = this.first.take() {
                    h.observe(arrived.elapsed().as_secs_f64());
                }
            }
            Poll::Ready(None | Some(Err(_))) => {
                this.guard.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
