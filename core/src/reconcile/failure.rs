//! What a failed reconcile does next: each error is classed (a stable reason, whether a
//! retry can help), retried with per-object exponential backoff, and shown in the object's
//! `Ready` condition once it is permanent or has persisted, so an error never loops
//! silently.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Context, Error, merged_conditions, status_key, write_status};
use crate::cloud::CloudError;
use crate::conditions::{Desired, types};

/// Reasons of the failures the reconcilers do not plan for.
pub mod reasons {
    /// The API server refused a child the operator wrote (400/422): the object's spec
    /// leads to a child Kubernetes does not accept.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// The operator may not do what the object needs (403): its RBAC lacks a verb.
    pub const FORBIDDEN: &str = "Forbidden";
    /// The API server failed or could not be reached, again and again.
    pub const API_UNAVAILABLE: &str = "APIUnavailable";
    /// A reconcile took longer than its deadline (a hung call).
    pub const RECONCILE_TIMEOUT: &str = "ReconcileTimeout";
    /// Models name each other as their base.
    pub const REFERENCE_CYCLE: &str = "ReferenceCycle";
    /// A role's ServiceAccount name is taken by an account the operator does not manage.
    pub const ACCOUNT_NOT_MANAGED: &str = "ServiceAccountNotManaged";
    pub use crate::conditions::reasons::{CLOUD_ERROR, INVALID_SPEC};
}

/// The first retry's delay; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest delay between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Consecutive failures of a retryable error before it shows in status: one or two failures
/// (a conflict, an API server restart) are routine and would only churn status.
pub const SHOW_AFTER: u32 = 3;
/// Longest condition message kept: the API's messages can quote a whole object.
const MAX_MESSAGE: usize = 1024;

/// How to go on after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Retry with backoff: the next attempt may succeed.
    Backoff,
    /// Retrying cannot help until the object changes: wait for a change (and the resync).
    OnChange,
}

/// An error as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub retry: Retry,
    /// Shown in status at once, not only after [`SHOW_AFTER`] failures.
    pub show_now: bool,
}

/// Classes an error of a reconcile.
pub fn classify(err: &Error) -> Failure {
    let message = truncate(err.to_string());
    let (reason, retry, show_now) = match err {
        Error::Invalid(_) => (reasons::INVALID_SPEC, Retry::OnChange, true),
        Error::Kube {
            source: kube::Error::Api(s),
            ..
        } => match s.code {
            400 | 422 => (reasons::APPLY_FAILED, Retry::OnChange, true),
            // RBAC is fixed outside the object: keep retrying, slowly.
            403 => (reasons::FORBIDDEN, Retry::Backoff, true),
            _ => (reasons::API_UNAVAILABLE, Retry::Backoff, false),
        },
        Error::Kube { .. } => (reasons::API_UNAVAILABLE, Retry::Backoff, false),
        Error::Cloud {
            source: CloudError::Permanent { reason, .. },
            ..
        } => (*reason, Retry::OnChange, true),
        Error::Cloud { .. } => (reasons::CLOUD_ERROR, Retry::Backoff, false),
        Error::Timeout(_) => (reasons::RECONCILE_TIMEOUT, Retry::Backoff, false),
        Error::ReferenceCycle(_) => (reasons::REFERENCE_CYCLE, Retry::OnChange, true),
        // Fixed outside the object: keep retrying, slowly.
        Error::AccountNotManaged(_) => (reasons::ACCOUNT_NOT_MANAGED, Retry::Backoff, true),
    };
    Failure {
        reason,
        message,
        retry,
        show_now,
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Consecutive failures per object, kept only while an object fails: a success or a new
/// generation starts over.
#[derive(Default)]
pub struct Backoff {
    failing: Mutex<HashMap<String, (Option<i64>, u32)>>,
    jitter: std::collections::hash_map::RandomState,
}

impl Backoff {
    /// Counts a failure of `key` at `generation`; returns how many in a row.
    pub fn failed(&self, key: &str, generation: Option<i64>) -> u32 {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failing.entry(key.to_owned()).or_insert((generation, 0));
        if entry.0 != generation {
            *entry = (generation, 0);
        }
        entry.1 += 1;
        entry.1
    }

    /// Forgets `key`'s failures.
    pub fn succeeded(&self, key: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if !failing.is_empty() {
            failing.remove(key);
        }
    }

    /// The delay before the next attempt of `key`: [`FIRST_RETRY`] doubled per failure in a
    /// row, at most [`MAX_RETRY`], less up to a fifth so that objects failing together do
    /// not retry together.
    pub fn delay(&self, key: &str) -> Duration {
        let failures = self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map_or(1, |(_, n)| *n);
        let full = FIRST_RETRY
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(MAX_RETRY);
        let spread = self.jitter.hash_one((key, failures)) % 1000;
        full - full / 5 * u32::try_from(spread).unwrap_or(0) / 1000
    }

    /// Objects failing now.
    pub fn len(&self) -> usize {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `status` with `Ready` False for `failure` (other conditions and fields kept) and
/// `ready: false`.
pub fn failed_status(status: &Value, failure: &Failure, generation: Option<i64>) -> Value {
    let existing: Vec<Condition> =
        serde_json::from_value(status["conditions"].clone()).unwrap_or_default();
    let desired = Desired::new(types::READY, false, failure.reason, failure.message.clone());
    let conditions = merged_conditions(&existing, &[desired], generation);
    let mut out = match status {
        Value::Object(_) => status.clone(),
        _ => Value::Object(Default::default()),
    };
    out["ready"] = Value::Bool(false);
    out["conditions"] = serde_json::to_value(conditions).unwrap_or(Value::Null);
    out
}

/// Records a failed reconcile of `obj`: counts it (the next attempt's delay grows with the
/// count) and shows it in status when it is permanent or has persisted (an Event marks the
/// transition).
pub async fn record<K>(ctx: &Context, obj: &K, err: &Error)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let key = status_key(obj);
    let generation = obj.meta().generation;
    let failure = classify(err);
    let failures = ctx.backoff.failed(&key, generation);
    if failure.show_now || failures >= SHOW_AFTER {
        let status = serde_json::to_value(obj)
            .ok()
            .map(|v| v["status"].clone())
            .unwrap_or(Value::Null);
        let status = ctx.fresh_status(obj, Some(status)).unwrap_or(Value::Null);
        let new = failed_status(&status, &failure, generation);
        match write_status(ctx, obj, Some(&status), &new).await {
            Ok(true) => {
                let conditions = |v: &Value| -> Vec<Condition> {
                    serde_json::from_value(v["conditions"].clone()).unwrap_or_default()
                };
                ctx.event_on_transition(obj, &conditions(&status), &conditions(&new));
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not show a failure in status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api_error(code: u16) -> Error {
        Error::Kube {
            step: "applying",
            object: "Service ns/a.b-server".into(),
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure(
                    "Service \"a.b-server\" is invalid: metadata.name: Invalid value",
                    "Invalid",
                )
                .with_code(code),
            )),
        }
    }

    #[test]
    fn a_refused_child_waits_for_a_change_and_shows_at_once() {
        let f = classify(&api_error(422));
        assert_eq!(
            (f.reason, f.retry, f.show_now),
            (reasons::APPLY_FAILED, Retry::OnChange, true)
        );
        assert!(
            f.message.contains("metadata.name: Invalid value"),
            "{}",
            f.message
        );
        let f = classify(&api_error(403));
        assert_eq!((f.reason, f.retry), (reasons::FORBIDDEN, Retry::Backoff));
        let f = classify(&api_error(503));
        assert_eq!(
            (f.reason, f.retry, f.show_now),
            (reasons::API_UNAVAILABLE, Retry::Backoff, false)
        );
        let cloud = Error::Cloud {
            step: "binding identity",
            object: "ns".into(),
            source: CloudError::Permanent {
                reason: "IdentityNotFound",
                message: "no such account".into(),
            },
        };
        assert_eq!(classify(&cloud).reason, "IdentityNotFound");
        assert_eq!(classify(&cloud).retry, Retry::OnChange);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let f = classify(&Error::Invalid("é".repeat(2000)));
        assert!(f.message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(f.message.ends_with('…'));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_starts_over_on_success_or_a_new_generation() {
        let b = Backoff::default();
        let mut delays = Vec::new();
        for _ in 0..10 {
            b.failed("Model/ns/a", Some(1));
            delays.push(b.delay("Model/ns/a"));
        }
        for (i, d) in delays.iter().enumerate() {
            let full = FIRST_RETRY.saturating_mul(1 << i.min(16)).min(MAX_RETRY);
            assert!(*d <= full && *d >= full - full / 5, "failure {i}: {d:?}");
        }
        assert!(delays[9] > Duration::from_secs(200), "{delays:?}");
        // A new generation starts over.
        assert_eq!(b.failed("Model/ns/a", Some(2)), 1);
        assert!(b.delay("Model/ns/a") <= FIRST_RETRY);
        // So does a success, which leaves nothing behind.
        b.succeeded("Model/ns/a");
        assert!(b.is_empty());
    }

    #[test]
    fn jitter_spreads_objects_that_fail_together() {
        let b = Backoff::default();
        let delays: std::collections::BTreeSet<Duration> = (0..50)
            .map(|i| {
                let key = format!("Model/ns/m{i}");
                b.failed(&key, Some(1));
                b.delay(&key)
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn a_failed_status_keeps_every_other_field_and_condition() {
        let status = json!({
            "ready": true,
            "artifacts": {"url": "s3://b/ns/m"},
            "conditions": [
                {"type": "Built", "status": "True", "reason": "BuildComplete", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Ready", "status": "True", "reason": "JobComplete", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ]
        });
        let f = classify(&api_error(422));
        let out = failed_status(&status, &f, Some(3));
        assert_eq!(out["ready"], false);
        assert_eq!(out["artifacts"], status["artifacts"]);
        let conditions = out["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0], status["conditions"][0]);
        assert_eq!(conditions[1]["reason"], "ApplyFailed");
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(conditions[1]["observedGeneration"], 3);
        // Failing again the same way writes the same status.
        assert_eq!(
            failed_status(&out, &f, Some(3))["conditions"][1]["reason"],
            "ApplyFailed"
        );
        // No status yet: one is made.
        let fresh = failed_status(&Value::Null, &f, Some(1));
        assert_eq!(fresh["conditions"][0]["type"], "Ready");
    }
}
