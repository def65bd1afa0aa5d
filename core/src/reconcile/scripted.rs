//! A scripted API server for reconciler tests without a cluster: each exchange names the
//! request it expects (method and path) and the answer it gives; a request out of script is
//! answered 500 and recorded, so that the test fails on it. The shape of kube-rs's
//! `controller-rs` fixtures, over a hand-written `tower::Service`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// One expected request and its answer.
struct Exchange {
    method: Method,
    path: String,
    status: u16,
    body: Value,
}

/// What the fake API saw: each request as `METHOD path?query` with its body.
#[derive(Clone, Debug)]
pub struct Seen {
    pub request: String,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct ScriptedApi {
    script: Arc<Mutex<VecDeque<Exchange>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    unexpected: Arc<Mutex<Vec<String>>>,
}

impl ScriptedApi {
    /// Expects `method path` next and answers `status` with `body`.
    pub fn expect(&self, method: Method, path: &str, status: u16, body: Value) -> &Self {
        self.script.lock().unwrap().push_back(Exchange {
            method,
            path: path.into(),
            status,
            body,
        });
        self
    }

    /// Expects `method path` next and answers with the API server's error `Status`.
    pub fn refuse(&self, method: Method, path: &str, code: u16, reason: &str) -> &Self {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("{reason} (scripted)"), "reason": reason, "code": code});
        self.expect(method, path, code, status)
    }

    /// A client of this API.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Fails unless every scripted exchange happened and nothing else did.
    pub fn done(&self) {
        let unexpected = self.unexpected.lock().unwrap();
        assert!(
            unexpected.is_empty(),
            "requests out of script: {unexpected:?}"
        );
        let left: Vec<_> = (self.script.lock().unwrap().iter())
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        assert!(left.is_empty(), "scripted requests never made: {left:?}");
    }
}

type Answer =
    Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

impl tower::Service<Request<Body>> for ScriptedApi {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Answer {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            let request = format!("{} {}", parts.method, parts.uri);
            this.seen.lock().unwrap().push(Seen {
                request: request.clone(),
                body,
            });
            let next = this.script.lock().unwrap().pop_front();
            let (status, answer) = match next {
                Some(e) if e.method == parts.method && e.path == path => (e.status, e.body),
                other => {
                    let wanted = other.map(|e| format!("{} {}", e.method, e.path));
                    this.unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{request} (the script wanted {wanted:?})"));
                    (
                        500,
                        json!({"kind": "Status", "code": 500, "message": "out of script"}),
                    )
                }
            };
            let body = Body::from(serde_json::to_vec(&answer).unwrap_or_default());
            Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(body)
                .expect("a status and a JSON body make a response"))
        })
    }
}
