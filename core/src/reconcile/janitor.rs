//! Cleans up the static PersistentVolumes the backends make per prefix (kind, EKS, AKS).
//! A volume is cluster-scoped and cannot be owned by the namespaced object it serves; its
//! claim is owned and is deleted with the object, after which Kubernetes marks the volume
//! `Released`. We delete Released volumes that carry our claim label. Their reclaim policy is
//! `Retain`, so deleting one never deletes a byte in the bucket.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

/// Label the backends put on a static volume: the claim it was made for.
pub const CLAIM_LABEL: &str = "substratus.ai/claim";
/// Label naming the claim's namespace.
pub const CLAIM_NAMESPACE_LABEL: &str = "substratus.ai/claim-namespace";

/// Whether a volume is ours, Released, and (when watching one namespace) of that namespace.
pub fn is_sweepable(pv: &PersistentVolume, namespace: Option<&str>) -> bool {
    let labels = pv.labels();
    labels.contains_key(CLAIM_LABEL)
        && namespace
            .is_none_or(|ns| labels.get(CLAIM_NAMESPACE_LABEL).map(String::as_str) == Some(ns))
        && pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
        && pv.metadata.deletion_timestamp.is_none()
}

/// Deletes the Released volumes of deleted claims; returns their names.
pub async fn sweep(client: &Client, namespace: Option<&str>) -> Result<Vec<String>, kube::Error> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let list = api.list(&ListParams::default().labels(CLAIM_LABEL)).await?;
    let mut deleted = vec![];
    for pv in list.items.iter().filter(|pv| is_sweepable(pv, namespace)) {
        let name = pv.name_any();
        // Precondition on the uid: a volume re-created under the same name is not touched.
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: pv.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Sweeps every `every` until `shutdown` completes.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        match sweep(&client, namespace.as_deref()).await {
            Ok(names) if !names.is_empty() => {
                tracing::info!(volumes = ?names, "deleted released volumes (bucket data kept)")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping released volumes"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeStatus;

    fn pv(labels: &[(&str, &str)], phase: &str) -> PersistentVolume {
        let mut pv = PersistentVolume::default();
        pv.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pv.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        pv
    }

    #[test]
    fn only_our_released_volumes_are_swept() {
        let ours = [(CLAIM_LABEL, "c"), (CLAIM_NAMESPACE_LABEL, "ns")];
        assert!(is_sweepable(&pv(&ours, "Released"), None));
        assert!(is_sweepable(&pv(&ours, "Released"), Some("ns")));
        assert!(!is_sweepable(&pv(&ours, "Released"), Some("other")));
        assert!(!is_sweepable(&pv(&ours, "Bound"), None));
        assert!(!is_sweepable(&pv(&ours, "Available"), None));
        assert!(!is_sweepable(&pv(&[("app", "x")], "Released"), None));
    }
}
