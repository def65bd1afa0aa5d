//! The gateway's metrics, per Server (`namespace`, `server`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::table::ServerKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub namespace: String,
    pub server: String,
}

impl From<&ServerKey> for ServerLabels {
    fn from(k: &ServerKey) -> ServerLabels {
        ServerLabels {
            namespace: k.namespace.clone(),
            server: k.name.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub namespace: String,
    pub server: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    pub namespace: String,
    pub server: String,
    pub direction: &'static str,
}

fn seconds() -> Histogram {
    // 1 ms … ~9 min.
    Histogram::new(exponential_buckets(0.001, 2.5, 15))
}

/// Every metric the gateway exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub in_flight: Family<ServerLabels, Gauge>,
    pub held: Family<ServerLabels, Gauge>,
    pub queue_wait: Family<ServerLabels, Histogram, fn() -> Histogram>,
    pub time_to_first_byte: Family<ServerLabels, Histogram, fn() -> Histogram>,
    pub retries: Family<ServerLabels, Counter>,
    pub adapter_loads: Family<ServerLabels, Counter>,
    pub scale: Family<ScaleLabels, Counter>,
    pub desired_replicas: Family<ServerLabels, Gauge>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            in_flight: Family::default(),
            held: Family::default(),
            queue_wait: Family::new_with_constructor(seconds),
            time_to_first_byte: Family::new_with_constructor(seconds),
            retries: Family::default(),
            adapter_loads: Family::default(),
            scale: Family::default(),
            desired_replicas: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("substratus_gateway");
        r.register(
            "requests",
            "Requests answered, by Server and HTTP status (unknown models count under server=\"\")",
            m.requests.clone(),
        );
        r.register(
            "in_flight",
            "Requests being answered by a replica",
            m.in_flight.clone(),
        );
        r.register(
            "held",
            "Requests held until a replica is ready",
            m.held.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Time a request waited for a ready replica",
            m.queue_wait.clone(),
        );
        r.register(
            "time_to_first_byte_seconds",
            "From the request's arrival to the first byte of the replica's response body",
            m.time_to_first_byte.clone(),
        );
        r.register(
            "retries",
            "Requests sent to another replica after one failed before answering",
            m.retries.clone(),
        );
        r.register(
            "adapter_loads",
            "Adapters loaded into a replica through the engine's run-time adapter API",
            m.adapter_loads.clone(),
        );
        r.register(
            "scale",
            "Changes of spec.replicas written by the gateway, by direction (up, down)",
            m.scale.clone(),
        );
        r.register(
            "desired_replicas",
            "Replicas the load asks for, after the scale-down delay",
            m.desired_replicas.clone(),
        );
        m
    }
}
