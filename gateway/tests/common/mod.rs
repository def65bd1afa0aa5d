//! Shared by the gateway's tests: a Server's EndpointSlices as the EndpointSlice controller
//! writes them, for replicas on loopback.

use std::net::SocketAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

/// The slices of Server `server`'s Service with these ready replicas.
pub fn slice(server: &str, replicas: &[SocketAddr]) -> Vec<EndpointSlice> {
    // One slice per port: a Service's slices share one port, loopback replicas do not.
    replicas
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{server}-server-{i}"), "namespace": "team",
                             "labels": {"kubernetes.io/service-name": format!("{server}-server"),
                                        "server": server}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": a.port()}],
                "endpoints": [{"addresses": [a.ip().to_string()], "conditions": {"ready": true}}],
            }))
            .unwrap()
        })
        .collect()
}
