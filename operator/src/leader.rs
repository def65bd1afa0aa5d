//! Leadership that ends before the Lease can be taken. The Lease manager renews the Lease,
//! but a renewal that hangs (a black-holed connection) or fails leaves it believing it still
//! leads after the Lease expired and another replica took it. So the leader reads the Lease
//! itself, each read under a short timeout, and stops once the last renewal it has seen is
//! about to run out: before any other replica may take the Lease, this one has stopped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

/// When the Lease, as read, stops being ours: `None` once another identity holds it (or no
/// one does), else the end of its current term in milliseconds since the epoch. The Lease's
/// renewal time was written from this process's clock, so the end compares with it.
pub fn term_end(lease: &Lease, identity: &str) -> Option<i64> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let seconds = i64::from(spec.lease_duration_seconds?);
    Some(renewed.0.as_millisecond() + seconds * 1000)
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Why leadership ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Lapse {
    /// Another identity holds the Lease.
    Taken,
    /// No renewal was seen in time: the Lease would expire within `margin`.
    Unrenewed,
}

/// Completes when this replica must stop leading: the Lease is held by another identity, or
/// its term ends within `margin` and no read showed a renewal. Reads every `every`, each
/// under a timeout of `every`. The lapse is a timer of its own, raced against every read and
/// every pause: a black-holed read cannot delay it past `end - margin`.
pub async fn lapse(
    leases: Api<Lease>,
    name: String,
    identity: String,
    every: Duration,
    margin: Duration,
) -> Lapse {
    let margin = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
    // Sleeps until the last seen term is within `margin` of its end; never, before one is seen.
    let lapsed = |end: Option<i64>| async move {
        match end {
            Some(e) => {
                let left = e.saturating_sub(margin).saturating_sub(now_millis());
                tokio::time::sleep(Duration::from_millis(u64::try_from(left).unwrap_or(0))).await
            }
            None => std::future::pending().await,
        }
    };
    let mut end: Option<i64> = None;
    loop {
        tokio::select! {
            read = tokio::time::timeout(every, leases.get(&name)) => match read {
                Ok(Ok(lease)) => match term_end(&lease, &identity) {
                    Some(e) => end = Some(e),
                    None => return Lapse::Taken,
                },
                Ok(Err(e)) => tracing::warn!(error = %e, "reading the leader Lease failed"),
                Err(_) => tracing::warn!(timeout = ?every, "reading the leader Lease timed out"),
            },
            _ = lapsed(end) => return Lapse::Unrenewed,
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = lapsed(end) => return Lapse::Unrenewed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_term_ends_a_lease_duration_after_the_last_renewal_and_only_for_its_holder() {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "l"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                     "acquireTime": "2026-12-01T00:00:00.000000Z",
                     "renewTime": "2026-12-01T00:00:10.500000Z"}
        }))
        .unwrap();
        let renewed = 1_796_083_210_500;
        assert_eq!(term_end(&lease, "a"), Some(renewed + 15_000));
        assert_eq!(term_end(&lease, "b"), None);
        let mut never_renewed = lease.clone();
        never_renewed.spec.as_mut().unwrap().renew_time = None;
        assert_eq!(
            term_end(&never_renewed, "a"),
            Some(renewed - 10_500 + 15_000)
        );
        let mut released = lease;
        released.spec.as_mut().unwrap().holder_identity = None;
        assert_eq!(term_end(&released, "a"), None);
    }
}
