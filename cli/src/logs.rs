//! Following the logs of an object's build and run pods while the CLI waits.

use std::collections::HashSet;
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};

use crate::manifest::Kind;

const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Follows the logs of every pod labelled `<kind>=<name>` (build pods first, then run pods),
/// each line prefixed with the pod's role, until [`Follower::finish`].
pub struct Follower {
    done: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// How long [`Follower::finish`] waits for the last lines of pods that have ended.
const DRAIN: Duration = Duration::from_secs(10);

impl Follower {
    /// Stops looking for new pods, streams those not seen yet (a Job can start and end
    /// between two looks), and waits, for a bounded time, until their logs are printed.
    pub async fn finish(self) {
        let _ = self.done.send(());
        let _ = self.task.await;
    }
}

pub fn follow(client: kube::Client, ns: String, kind: Kind, name: String) -> Follower {
    let (done, mut finished) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let selector = format!("{}={name}", kind.lower());
        let mut seen = HashSet::new();
        let mut streams = tokio::task::JoinSet::new();
        let mut last = false;
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
                    streams.spawn(stream_pod(pods.clone(), p));
                }
            }
            if last {
                // Pods that ended have their whole log; running ones (a Server's) do not end.
                let _ = tokio::time::timeout(DRAIN, async {
                    while streams.join_next().await.is_some() {}
                })
                .await;
                streams.abort_all();
                return;
            }
            last = tokio::select! {
                _ = &mut finished => true,
                _ = tokio::time::sleep(Duration::from_secs(2)) => false,
            };
        }
    });
    Follower { done, task }
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
