//! Substratus objects as the CLI handles them: apply, the upload handshake, and waiting for
//! an object with a live view of its conditions.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::archive::Archive;
use crate::manifest::Kind;
use crate::upload::{self, UploadError};

/// The field manager of everything the CLI writes.
pub const FIELD_MANAGER: &str = "sub";
/// Annotation the CLI sets after an upload so that the controller looks at storage again.
pub const UPLOAD_TIMESTAMP_ANNOTATION: &str = "substratus.ai/upload-timestamp";

/// Reasons after which waiting longer changes nothing.
const TERMINAL: [&str; 6] = [
    "BuildFailed",
    "JobFailed",
    "InvalidSpec",
    "GPUTypeUnavailable",
    "PodFailed",
    "UploadMismatch",
];

pub fn api(client: &kube::Client, kind: Kind, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kind.api_resource())
}

/// Server-side apply of `obj` as field manager `sub`.
pub async fn apply(api: &Api<DynamicObject>, obj: &Value, force: bool) -> Result<DynamicObject> {
    let name = crate::manifest::name_of(obj)?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = force;
    api.patch(&name, &params, &Patch::Apply(obj))
        .await
        .with_context(|| format!("applying {} {name}", obj["kind"].as_str().unwrap_or("")))
}

/// A fresh request id for `spec.build.upload.requestID`.
pub fn request_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Makes `obj` an upload build of `md5`: `spec.build.upload{md5Checksum, requestID}`, no
/// git source and no image of its own.
pub fn set_upload(obj: &mut Value, md5_hex: &str, request: &str) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = obj["spec"].as_object_mut().expect("an object");
    spec.remove("image");
    spec.insert(
        "build".into(),
        json!({"upload": {"md5Checksum": md5_hex, "requestID": request}}),
    );
}

/// A condition as shown to users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

pub fn conditions(obj: &DynamicObject) -> Vec<Shown> {
    obj.data["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| Shown {
                    type_: c["type"].as_str().unwrap_or("").into(),
                    status: c["status"].as_str().unwrap_or("").into(),
                    reason: c["reason"].as_str().unwrap_or("").into(),
                    message: c["message"].as_str().unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_ready(obj: &DynamicObject) -> bool {
    obj.data["status"]["ready"].as_bool().unwrap_or(false)
}

fn mark(status: &str) -> &'static str {
    match status {
        "True" => "✓",
        "False" => "✗",
        _ => "…",
    }
}

/// What the object says about an upload request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Storage already holds these bytes.
    Stored,
    /// PUT to this URL.
    Url(String),
    /// The URL answering the request has expired.
    Expired,
}

/// Reads the object's answer to `request` from its status, if it has one yet.
pub fn answer(obj: &DynamicObject, md5_hex: &str, request: &str) -> Option<Answer> {
    let u = &obj.data["status"]["buildUpload"];
    if u["storedMD5Checksum"]
        .as_str()
        .is_some_and(|m| m.eq_ignore_ascii_case(md5_hex))
    {
        return Some(Answer::Stored);
    }
    if u["requestID"] != request {
        return None;
    }
    let url = u["signedURL"].as_str()?;
    let expired = u["expiration"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| t <= jiff::Timestamp::now());
    Some(if expired {
        Answer::Expired
    } else {
        Answer::Url(url.to_owned())
    })
}

/// Waits for the object to exist and answer an upload request.
async fn wait_upload_answer(
    api: &Api<DynamicObject>,
    name: &str,
    md5_hex: &str,
    request: &str,
    timeout: Duration,
) -> Result<Answer> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(o) = api.get_opt(name).await.context("reading the object")?
            && let Some(a) = answer(&o, md5_hex, request)
        {
            return Ok(a);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no signed upload URL for {name} after {timeout:?}: is the Substratus operator running?"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn renew(api: &Api<DynamicObject>, name: &str) -> Result<String> {
    eprintln!("… the upload URL expired; asking for a fresh one");
    let request = request_id();
    let patch = json!({"spec": {"build": {"upload": {"requestID": request}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("asking for a fresh upload URL")?;
    Ok(request)
}

/// The upload handshake from the client side: wait for the URL answering our request (or
/// for storage already holding these bytes), PUT, then touch the object. An expired URL, in
/// status or refused by storage, is replaced by asking again with a new request id (at most
/// 3 times).
pub async fn upload(
    api: &Api<DynamicObject>,
    name: &str,
    archive: &Archive,
    mut request: String,
    timeout: Duration,
) -> Result<bool> {
    for _ in 0..4 {
        let url = match wait_upload_answer(api, name, &archive.md5_hex, &request, timeout).await? {
            Answer::Stored => {
                eprintln!("✓ upload: {} already in storage, skipped", archive.md5_hex);
                return Ok(false);
            }
            Answer::Expired => {
                request = renew(api, name).await?;
                continue;
            }
            Answer::Url(url) => url,
        };
        let bar = upload::progress(archive.size);
        match upload::put_file(&url, &archive.path, &archive.md5_hex, &bar).await {
            Ok(()) => {
                bar.finish_and_clear();
                eprintln!(
                    "✓ uploaded {} ({} bytes, md5 {})",
                    name, archive.size, archive.md5_hex
                );
                let patch = json!({"metadata": {"annotations": {
                    UPLOAD_TIMESTAMP_ANNOTATION: jiff::Timestamp::now().to_string()
                }}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .context("marking the upload done")?;
                return Ok(true);
            }
            Err(UploadError::Expired(_)) => {
                bar.finish_and_clear();
                request = renew(api, name).await?;
            }
            Err(e) => {
                bar.finish_and_clear();
                return Err(e.into());
            }
        }
    }
    bail!(
        "the upload URL kept expiring before the upload finished; raise the operator's UPLOAD_URL_TTL_SECONDS"
    )
}

/// How waiting ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Failed { reason: String, message: String },
}

/// Watches the object until it is Ready or fails for good, printing each condition change.
pub async fn wait(
    api: &Api<DynamicObject>,
    kind: Kind,
    name: &str,
    timeout: Duration,
) -> Result<Outcome> {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut shown: BTreeMap<String, Shown> = BTreeMap::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let obj = tokio::select! {
            _ = &mut deadline => bail!("{} {name} not Ready after {timeout:?}", kind.name()),
            next = stream.next() => match next {
                Some(Ok(o)) => o,
                Some(Err(e)) => { eprintln!("… watch: {e}"); continue }
                None => bail!("the watch of {name} ended"),
            },
        };
        let mut cs = conditions(&obj);
        // In the order things happen.
        let order = |t: &str| {
            ["Uploaded", "Built", "Complete", "Serving"]
                .iter()
                .position(|o| *o == t)
        };
        cs.sort_by_key(|c| order(&c.type_));
        for c in cs {
            if c.type_ == "Ready" || shown.get(&c.type_) == Some(&c) {
                continue;
            }
            eprintln!(
                "{} {}: {} — {}",
                mark(&c.status),
                c.type_,
                c.reason,
                c.message
            );
            shown.insert(c.type_.clone(), c);
        }
        // Status written for an earlier spec says nothing about this one.
        let generation = obj.metadata.generation;
        let current = obj.data["status"]["observedGeneration"].as_i64() == generation;
        if is_ready(&obj) && current {
            eprintln!("✓ {} {name} is Ready", kind.name());
            return Ok(Outcome::Ready);
        }
        if let Some(c) = conditions(&obj)
            .into_iter()
            .find(|c| c.status == "False" && TERMINAL.contains(&c.reason.as_str()))
            && current
        {
            return Ok(Outcome::Failed {
                reason: c.reason,
                message: c.message,
            });
        }
    }
}

/// Deletes an object (foreground, so its children go first).
pub async fn delete(api: &Api<DynamicObject>, kind: Kind, name: &str) -> Result<()> {
    api.delete(name, &DeleteParams::foreground())
        .await
        .with_context(|| format!("deleting {} {name}", kind.name()))?;
    Ok(())
}

/// Suspends a Notebook.
pub async fn suspend(api: &Api<DynamicObject>, name: &str, suspend: bool) -> Result<()> {
    let patch = json!({"spec": {"suspend": suspend}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("setting spec.suspend={suspend} on Notebook {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_build_replaces_git_and_image() {
        let mut m = json!({"kind": "Model", "spec": {"image": "old", "build": {"git": {"url": "u"}}, "params": {"a": 1}}});
        set_upload(&mut m, "abc", "r1");
        assert!(m["spec"].get("image").is_none());
        assert_eq!(
            m["spec"]["build"],
            json!({"upload": {"md5Checksum": "abc", "requestID": "r1"}})
        );
        assert_eq!(m["spec"]["params"]["a"], 1);
        let mut bare = json!({"kind": "Model"});
        set_upload(&mut bare, "abc", "r1");
        assert_eq!(bare["spec"]["build"]["upload"]["requestID"], "r1");
        assert_ne!(request_id(), request_id());
        assert_eq!(request_id().len(), 32);
    }
}
