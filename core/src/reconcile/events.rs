//! Kubernetes Events (`events.k8s.io/v1`) about the operator's objects, sent in the
//! background. The operator publishes only on transitions of `Ready`, which do not repeat,
//! so no Event is kept in memory to be aggregated into a series: memory stays flat however
//! many objects there are.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// Events being sent at once; more wait for a turn.
pub const EVENTS_IN_FLIGHT: usize = 4;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Sends Events as `controller` (the reporting controller) from `instance`.
#[derive(Clone)]
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Events {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Events {
        Events {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            permits: Arc::new(tokio::sync::Semaphore::new(EVENTS_IN_FLIGHT)),
        }
    }

    /// Sends an Event about `regarding` in the background (a reconcile does not wait for
    /// it); one that fails is logged, not retried.
    pub fn publish(&self, regarding: ObjectReference, type_: EventType, reason: &str, note: &str) {
        let event = event(
            &self.controller,
            &self.instance,
            regarding,
            type_,
            reason,
            note,
            jiff::Timestamp::now(),
        );
        let api: Api<Event> = Api::namespaced(
            self.client.clone(),
            event.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let permits = self.permits.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(error = %e, reason = event.reason.as_deref().unwrap_or(""), "publishing an event failed");
            }
        });
    }
}

/// The Event to send; its name is the object's name and the time in hex nanoseconds, as
/// client-go names them.
fn event(
    controller: &str,
    instance: &str,
    regarding: ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
    now: jiff::Timestamp,
) -> Event {
    let name = format!(
        "{}.{:x}",
        regarding.name.as_deref().unwrap_or(controller),
        now.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(
                regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            ..Default::default()
        },
        action: Some("Reconcile".into()),
        reason: Some(reason.to_owned()),
        // The API refuses notes over 1 kB.
        note: Some(note.chars().take(1000).collect()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        reporting_controller: Some(controller.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_reporter_and_time() {
        let regarding = ObjectReference {
            api_version: Some("substratus.ai/v1".into()),
            kind: Some("Model".into()),
            name: Some("m".into()),
            namespace: Some("ns".into()),
            uid: Some("u".into()),
            ..Default::default()
        };
        let now: jiff::Timestamp = "2026-11-27T04:00:00.000001Z".parse().unwrap();
        let long = "x".repeat(1500);
        let e = event(
            "substratus",
            "pod-1",
            regarding.clone(),
            EventType::Warning,
            "JobFailed",
            &long,
            now,
        );
        assert_eq!(
            e.metadata.name.as_deref(),
            Some(format!("m.{:x}", now.as_nanosecond()).as_str())
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.regarding, Some(regarding));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("JobFailed"));
        assert_eq!(e.note.as_ref().map(|n| n.len()), Some(1000));
        assert_eq!(e.reporting_controller.as_deref(), Some("substratus"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(e.event_time, Some(MicroTime(now)));
        // Serialized as the API expects it.
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["eventTime"], "2026-11-27T04:00:00.000001Z");
        assert_eq!(v["reportingController"], "substratus");
    }
}
