//! Prometheus metrics of the reconcilers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

/// Counters and histograms every controller updates.
pub struct Metrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub status_writes: Family<KindLabels, Counter>,
    pub child_writes: Family<KindLabels, Counter>,
    /// Objects held in the watch caches, by kind (updated every sweep interval).
    pub cached: Family<KindLabels, Gauge>,
    /// Reconciles running now, by kind.
    pub in_flight: Family<KindLabels, Gauge>,
    /// Objects whose last reconcile failed, waiting for their retry (all kinds).
    pub retrying: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under `substratus_`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
            }),
            status_writes: Family::default(),
            child_writes: Family::default(),
            cached: Family::default(),
            in_flight: Family::default(),
            retrying: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("substratus");
        sub.register(
            "reconciles",
            "Reconciles run, by kind and result",
            m.reconciles.clone(),
        );
        sub.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and reason",
            m.errors.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Time a reconcile took, by kind",
            m.duration.clone(),
        );
        sub.register(
            "status_writes",
            "Status updates written, by kind",
            m.status_writes.clone(),
        );
        sub.register(
            "child_writes",
            "Child objects created, updated or deleted, by kind",
            m.child_writes.clone(),
        );
        sub.register(
            "cached_objects",
            "Objects held in the operator's watch caches, by kind",
            m.cached.clone(),
        );
        sub.register(
            "reconciles_in_flight",
            "Reconciles running now, by kind",
            m.in_flight.clone(),
        );
        sub.register(
            "objects_retrying",
            "Objects whose last reconcile failed, waiting for their retry with backoff",
            m.retrying.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(&mut Registry::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_under_their_prometheus_names() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        let model = KindLabels {
            kind: "Model".into(),
        };
        m.reconciles
            .get_or_create(&ResultLabels {
                kind: "Model".into(),
                result: "ok".into(),
            })
            .inc_by(3);
        m.status_writes.get_or_create(&model).inc();
        m.in_flight.get_or_create(&model).inc();
        m.retrying.set(2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("substratus_reconciles_total{kind=\"Model\",result=\"ok\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("substratus_status_writes_total{kind=\"Model\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("substratus_reconciles_in_flight{kind=\"Model\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("substratus_objects_retrying 2\n"), "{text}");
    }
}
