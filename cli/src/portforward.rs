//! Port-forwarding through the Kubernetes API (the pod's `portforward` subresource over a
//! WebSocket), without `kubectl`: a local listener on 127.0.0.1 whose every connection gets
//! its own stream to the pod's port.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::net::TcpListener;

/// A running forward; stops when dropped.
pub struct Forward {
    pub local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards `127.0.0.1:<local>` (0: any free port) to `pod:<remote>`.
pub async fn start(pods: Api<Pod>, pod: &str, local: u16, remote: u16) -> Result<Forward> {
    let listener = TcpListener::bind(("127.0.0.1", local))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{local}"))?;
    let addr = listener.local_addr()?;
    let pod = pod.to_owned();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let pods = pods.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                let mut pf = match pods.portforward(&pod, &[remote]).await {
                    Ok(pf) => pf,
                    Err(e) => {
                        eprintln!("port-forward to {pod}:{remote}: {e}");
                        return;
                    }
                };
                let Some(mut upstream) = pf.take_stream(remote) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                drop(upstream);
                let _ = pf.join().await;
            });
        }
    });
    Ok(Forward { local: addr, task })
}
