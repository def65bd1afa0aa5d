//! Fine-tuned adapters loaded into replicas at run time, through the engine's adapter API
//! (vLLM's, which the reference image implements too):
//!
//! - `GET /v1/models` lists what a replica has loaded: an adapter is an entry with a
//!   `parent`, and `root` is the folder it was loaded from;
//! - `POST /v1/load_lora_adapter` `{"lora_name", "lora_path"}` loads one;
//! - `POST /v1/unload_lora_adapter` `{"lora_name"}` drops one.
//!
//! Before an adapter request goes to a replica, [`Adapters::ensure`] makes sure the replica
//! has that adapter loaded from the folder the Server's status names (a new run of the
//! adapter's Model is a new folder). What a replica holds is asked again after
//! [`RECHECK`], so a replica that restarted under the same address is noticed; loads into
//! one replica are made one at a time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long what a replica said it holds is trusted.
pub const RECHECK: Duration = Duration::from_secs(10);
/// Longest one call of the adapter API may take (a load reads the adapter's weights).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Replica {
    /// Adapter name → the folder it was loaded from.
    loaded: BTreeMap<String, String>,
    checked: Option<Instant>,
}

/// What the gateway knows of the adapters loaded in each replica.
pub struct Adapters {
    client: Client<HttpConnector, Full<Bytes>>,
    replicas: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Replica>>>>,
}

impl Adapters {
    pub fn new(client: Client<HttpConnector, Full<Bytes>>) -> Adapters {
        Adapters {
            client,
            replicas: Mutex::new(HashMap::new()),
        }
    }

    /// Makes sure replica `addr` serves adapter `name` from `path`, loading it (and
    /// dropping an older load under that name) when it does not. The error says what the
    /// replica answered.
    pub async fn ensure(&self, addr: SocketAddr, name: &str, path: &str) -> Result<Loaded, String> {
        let replica = {
            let mut replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
            replicas.entry(addr).or_default().clone()
        };
        let mut r = replica.lock().await;
        if r.checked.is_none_or(|at| at.elapsed() > RECHECK) {
            r.loaded = self.listed(addr).await?;
            r.checked = Some(Instant::now());
        }
        if r.loaded.get(name).map(String::as_str) == Some(path) {
            return Ok(Loaded::Already);
        }
        let load = json!({"lora_name": name, "lora_path": path});
        let (status, body) = self.post(addr, "/v1/load_lora_adapter", &load).await?;
        if !(200..300).contains(&status) {
            // An engine that refuses to load a name it holds (vLLM) is asked to drop the
            // old load first.
            if !r.loaded.contains_key(name) {
                return Err(refused(addr, name, path, status, &body));
            }
            let (status, body) = self
                .post(addr, "/v1/unload_lora_adapter", &json!({"lora_name": name}))
                .await?;
            if !(200..300).contains(&status) {
                return Err(refused(addr, name, path, status, &body));
            }
            r.loaded.remove(name);
            let (status, body) = self.post(addr, "/v1/load_lora_adapter", &load).await?;
            if !(200..300).contains(&status) {
                return Err(refused(addr, name, path, status, &body));
            }
        }
        r.loaded.insert(name.to_owned(), path.to_owned());
        Ok(Loaded::Now)
    }

    /// The adapters a replica lists: entries of `/v1/models` with a `parent`.
    async fn listed(&self, addr: SocketAddr) -> Result<BTreeMap<String, String>, String> {
        let req = hyper::Request::get(format!("http://{addr}/v1/models"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, body) = self.call(addr, req).await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "replica {addr} answered {status} to GET /v1/models: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let list: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("replica {addr}: GET /v1/models is not JSON: {e}"))?;
        Ok(adapters_listed(&list))
    }

    async fn post(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Bytes), String> {
        let req = hyper::Request::post(format!("http://{addr}{path}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        self.call(addr, req).await
    }

    async fn call(
        &self,
        addr: SocketAddr,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), String> {
        let what = format!("{} {}", req.method(), req.uri().path());
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(format!("replica {addr}: {what}: {e}")),
            Err(_) => Err(format!(
                "replica {addr}: {what}: no answer within {}s",
                CALL_TIMEOUT.as_secs()
            )),
        }
    }
}

/// Whether an adapter was loaded for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    Already,
    Now,
}

fn refused(addr: SocketAddr, name: &str, path: &str, status: u16, body: &[u8]) -> String {
    format!(
        "replica {addr} did not load adapter {name} from {path}: it answered {status}: {}",
        String::from_utf8_lossy(body).trim()
    )
}

/// Adapter name → folder, from an OpenAI model list: the entries with a `parent` (the
/// base model); `root` is where it was loaded from (empty when not said).
pub fn adapters_listed(list: &Value) -> BTreeMap<String, String> {
    list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["parent"].is_string())
        .filter_map(|m| {
            Some((
                m["id"].as_str()?.to_owned(),
                m["root"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicas_adapters_are_the_listed_models_with_a_parent() {
        let list = json!({"object": "list", "data": [
            {"id": "tiny", "object": "model", "root": "/content/model"},
            {"id": "sql", "object": "model", "parent": "tiny", "root": "/content/adapters/sql/2"},
            {"id": "chat", "object": "model", "parent": "tiny"},
            {"object": "model", "parent": "tiny"},
        ]});
        assert_eq!(
            adapters_listed(&list),
            BTreeMap::from([
                ("chat".to_owned(), String::new()),
                ("sql".to_owned(), "/content/adapters/sql/2".to_owned()),
            ])
        );
        assert!(adapters_listed(&json!({"error": "x"})).is_empty());
    }
}
