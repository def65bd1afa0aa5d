//! Following the logs of an object's build and run pods while the CLI waits.

use std::collections::HashSet;
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};

use crate::manifest::Kind;

const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Follows, until dropped, the logs of every pod labelled `<kind>=<name>` (build pods first,
/// then run pods), each line prefixed with the pod's role.
pub fn follow(
    client: kube::Client,
    ns: String,
    kind: Kind,
    name: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let selector = format!("{}={name}", kind.lower());
        let mut seen = HashSet::new();
        loop {
            if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                let mut items = list.items;
                items.sort_by_key(|p| p.metadata.creation_timestamp.clone());
                for p in items {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    let phase = p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default();
                    if phase == "Pending" || !seen.insert(uid) {
                        continue;
                    }
                    tokio::spawn(stream_pod(pods.clone(), p));
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

async fn stream_pod(pods: Api<Pod>, pod: Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let role = labels.get("role").cloned().unwrap_or_else(|| "pod".into());
    let container = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER))
        .cloned();
    let params = LogParams {
        follow: true,
        container,
        ..Default::default()
    };
    // A container that has just started may not serve logs yet: a few tries, then say so.
    let mut attempt = 0;
    loop {
        match pods.log_stream(&name, &params).await {
            Ok(stream) => {
                let mut lines = stream.lines();
                while let Some(Ok(line)) = lines.next().await {
                    eprintln!("[{role}] {line}");
                }
                return;
            }
            Err(e) if attempt >= 5 => {
                eprintln!("[{role}] logs of pod {name} unavailable: {e}");
                return;
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
