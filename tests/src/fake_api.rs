//! A recording HTTP server on loopback for the provider APIs no local server implements
//! (metadata servers, IAM, STS, EKS, ARM). Each fake answers through a closure that checks
//! the request shape the provider documents; every request is kept for assertions.
//!
//! Also compiled into `substratus-clouds`' tests (by path: the clouds crate cannot depend on
//! this one), so it uses nothing of this crate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;

/// One request the fake saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// Form-encoded body fields (AWS query protocol).
    pub fn form(&self) -> BTreeMap<String, String> {
        url_pairs(&self.body)
    }
}

fn url_pairs(s: &str) -> BTreeMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |x: &str| {
                percent_encoding::percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

type Handler = dyn Fn(&Seen) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync;

/// A running fake; stops with the test's runtime.
pub struct Fake {
    pub endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// Serves every request with `handler` → (status, headers, body).
    pub async fn start(
        handler: impl Fn(&Seen) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync + 'static,
    ) -> Fake {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let handler = handler.clone();
                let log = log.clone();
                async move {
                    let s = Seen {
                        method: method.to_string(),
                        path: percent_encoding::percent_decode_str(uri.path())
                            .decode_utf8_lossy()
                            .into_owned(),
                        query: url_pairs(uri.query().unwrap_or("")),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let (status, hdrs, body) = handler(&s);
                    log.lock().unwrap().push(s);
                    let mut r = Response::builder().status(StatusCode::from_u16(status).unwrap());
                    for (k, v) in hdrs {
                        r = r.header(k, v);
                    }
                    r.body(Body::from(body)).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { endpoint, seen }
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests whose method and path match.
    pub fn seen_at(&self, method: &str, path_suffix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.path.ends_with(path_suffix))
            .collect()
    }
}

pub fn json_ok(v: serde_json::Value) -> (u16, Vec<(&'static str, String)>, String) {
    (
        200,
        vec![("content-type", "application/json".into())],
        v.to_string(),
    )
}

pub fn status(code: u16, body: &str) -> (u16, Vec<(&'static str, String)>, String) {
    (code, vec![], body.to_owned())
}
