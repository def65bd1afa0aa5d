//! Cleans up the static PersistentVolumes the backends make per prefix (kind, EKS, AKS).
//! A volume is cluster-scoped and cannot be owned by the namespaced object it serves; its
//! claim is owned and is deleted with the object, after which Kubernetes marks the volume
//! `Released`. We delete Released volumes that carry our claim label. Their reclaim policy is
//! `Retain`, so deleting one never deletes a byte in the bucket.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};

use crate::watch::{Caches, Volume};

pub use crate::names::{CLAIM_LABEL, CLAIM_NAMESPACE_LABEL};

/// Whether a volume is ours, Released, and (when watching one namespace) of that namespace.
pub fn is_sweepable(pv: &PersistentVolume, namespace: Option<&str>) -> bool {
    let labels = pv.labels();
    labels.contains_key(CLAIM_LABEL)
        && namespace
            .is_none_or(|ns| labels.get(CLAIM_NAMESPACE_LABEL).map(String::as_str) == Some(ns))
        && pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
        && pv.metadata.deletion_timestamp.is_none()
}

/// Volumes (by name) whose claim is not among `claims` (`namespace/name` keys): candidates
/// only — a volume made a moment before its claim is one too, so the caller checks the phase.
pub fn orphans<'a>(
    volumes: impl IntoIterator<Item = (&'a Box<str>, &'a Volume)>,
    has_claim: impl Fn(&str) -> bool,
    namespace: Option<&str>,
) -> Vec<String> {
    volumes
        .into_iter()
        .filter_map(|(name, v)| {
            let (ns, claim) = v.claim.as_ref()?;
            if namespace.is_some_and(|w| w != &**ns)
                || has_claim(&crate::watch::index::key(Some(ns), claim))
            {
                return None;
            }
            Some(name.to_string())
        })
        .collect()
}

/// Deletes the Released volumes of deleted claims; returns their names. Reads the shared
/// caches (no list); only a volume whose claim is gone is read, to see its phase.
pub async fn sweep(
    client: &Client,
    caches: &Caches,
    namespace: Option<&str>,
) -> Result<Vec<String>, kube::Error> {
    // Read in place: at 10,000 objects a copy of both indexes would be megabytes.
    let candidates = caches.volumes.with(|volumes| {
        caches
            .claims
            .with(|claims| orphans(volumes, |k| claims.contains_key(k), namespace))
    });
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let mut deleted = vec![];
    for name in candidates {
        let Some(pv) = api.get_opt(&name).await? else {
            continue;
        };
        if !is_sweepable(&pv, namespace) {
            continue;
        }
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

/// Sweeps every `every` until `shutdown` completes; records the caches' sizes each time.
pub async fn run(
    ctx: std::sync::Arc<super::Context>,
    namespace: Option<String>,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut shutdown => return,
        }
        let caches = ctx.caches();
        for (kind, n) in caches.sizes() {
            ctx.metrics
                .cached
                .get_or_create(&crate::metrics::KindLabels { kind: kind.into() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        match sweep(&ctx.client, caches, namespace.as_deref()).await {
            Ok(names) if !names.is_empty() => {
                tracing::info!(volumes = ?names, "deleted released volumes (bucket data kept)")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping released volumes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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

    #[test]
    fn volumes_whose_claim_is_cached_are_not_candidates() {
        let meta = |name: &str, ns: &str, claim: &str| ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [(CLAIM_LABEL, claim), (CLAIM_NAMESPACE_LABEL, ns)]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        let vols: std::collections::HashMap<Box<str>, Volume> = [
            meta("v1", "a", "c1"),
            meta("v2", "a", "c2"),
            meta("v3", "b", "c1"),
        ]
        .iter()
        .map(|m| (m.name.as_deref().unwrap().into(), Volume::of(m)))
        .collect();
        let has_claim = |k: &str| k == "a/c1";
        let mut all = orphans(&vols, has_claim, None);
        all.sort();
        assert_eq!(all, ["v2", "v3"]);
        assert_eq!(orphans(&vols, has_claim, Some("a")), ["v2"]);
        let unlabelled = ObjectMeta {
            name: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(Volume::of(&unlabelled), Volume::default());
        let x: Box<str> = "x".into();
        assert!(orphans([(&x, &Volume::of(&unlabelled))], has_claim, None).is_empty());
    }
}
