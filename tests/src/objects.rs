//! Our kinds as dynamic objects: creating them from JSON, reading their conditions, waiting
//! for a reason or for Ready.

use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::cluster::wait_for;

/// How long [`wait_reason`] and [`wait_ready`] wait.
pub const WAIT: Duration = Duration::from_secs(90);

/// The API resource of one of our kinds (`Model`, `Dataset`, `Server`, `Notebook`).
pub fn api_resource(kind: &str) -> ApiResource {
    ApiResource {
        group: "substratus.ai".into(),
        version: "v1".into(),
        api_version: "substratus.ai/v1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    }
}

/// The namespaced API of one of our kinds.
pub fn api(c: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), ns, &api_resource(kind))
}

/// An object of one of our kinds, as JSON.
pub fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// Creates `obj` (one of our kinds, as JSON) in `ns`; panics naming the kind if refused.
pub async fn create(c: &kube::Client, ns: &str, mut obj: Value) {
    obj["metadata"]["namespace"] = json!(ns);
    let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
    let dynamic: DynamicObject =
        serde_json::from_value(obj).unwrap_or_else(|e| panic!("a {kind} as JSON: {e}"));
    api(c, ns, &kind)
        .create(&PostParams::default(), &dynamic)
        .await
        .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
}

/// The status of an object (`null` when it has none or does not exist).
pub async fn status(c: &kube::Client, ns: &str, kind: &str, name: &str) -> Value {
    api(c, ns, kind)
        .get(name)
        .await
        .map(|o| o.data["status"].clone())
        .unwrap_or(Value::Null)
}

/// `(status, reason, message)` of condition `type_` in `status` (empty strings when absent).
pub fn condition(status: &Value, type_: &str) -> (String, String, String) {
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
        c["message"].as_str().unwrap_or("").into(),
    )
}

/// `(ready, reason of Ready, message of Ready)` of an object.
pub async fn readiness(
    c: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<(bool, String, String), String> {
    let o = api(c, ns, kind)
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    let status = o.data.get("status").cloned().unwrap_or(Value::Null);
    let (_, reason, message) = condition(&status, "Ready");
    Ok((status["ready"].as_bool().unwrap_or(false), reason, message))
}

/// Waits until the Ready condition has `reason`; returns its message.
pub async fn wait_reason(
    c: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
    reason: &str,
) -> String {
    wait_for(
        &format!("{kind} {name} to show reason {reason}"),
        WAIT,
        || async {
            let (_, r, m) = readiness(c, ns, kind, name).await?;
            if r == reason {
                Ok(Some(m))
            } else {
                Err(format!("reason {r:?}: {m}"))
            }
        },
    )
    .await
}

/// Waits until an object says it is ready.
pub async fn wait_ready(c: &kube::Client, ns: &str, kind: &str, name: &str) {
    wait_for(&format!("{kind} {name} to be ready"), WAIT, || async {
        let (ready, r, m) = readiness(c, ns, kind, name).await?;
        if ready {
            Ok(Some(()))
        } else {
            Err(format!("{r}: {m}"))
        }
    })
    .await
}
