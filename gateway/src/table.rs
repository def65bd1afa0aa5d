//! The routing table: which Server answers a `model`, at which ready addresses, and why it
//! cannot answer yet. Built from the Servers and their Services' EndpointSlices; pure.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use substratus_core::names::{Kind, KindChildren};
use substratus_crds::{Autoscaling, Routing, Server};

/// The label the EndpointSlice controller puts on a Service's slices.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The Server Service's port name.
pub const PORT_NAME: &str = "http";

/// A Server, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One Server as the gateway routes to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub key: ServerKey,
    /// Ready replicas' addresses, sorted.
    pub endpoints: Vec<SocketAddr>,
    /// `spec.replicas` as last seen.
    pub replicas: i32,
    pub autoscaling: Option<Autoscaling>,
    pub routing: Routing,
    /// The Server's `Ready` condition as `Reason: message`, when it is not ready.
    pub not_ready: Option<String>,
    /// Adapter name → the folder replicas load it from (`status.adapters`, for the
    /// adapters `spec.adapters` still lists).
    pub adapters: BTreeMap<String, String>,
}

/// What a `model` resolves to.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    Found(&'a Route),
    Unknown,
    /// Several Servers (in different namespaces) claim the name.
    Ambiguous(Vec<&'a ServerKey>),
}

/// Every routable Server and the names that reach it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    routes: BTreeMap<ServerKey, Route>,
    /// Model id → the Servers claiming it.
    ids: BTreeMap<String, Vec<ServerKey>>,
}

impl Table {
    /// The table of these Servers, with the ready addresses of their Services' slices.
    pub fn build<'a>(
        servers: impl IntoIterator<Item = &'a Server>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Table {
        // Service (namespace, name) → ready addresses.
        let mut ready: BTreeMap<(String, String), Vec<SocketAddr>> = BTreeMap::new();
        for slice in slices {
            let (Some(ns), Some(service)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            let addrs = ready.entry((ns.to_owned(), service.clone())).or_default();
            addrs.extend(ready_addresses(slice));
        }
        let mut table = Table::default();
        for server in servers {
            let (Some(ns), Some(name)) = (
                server.metadata.namespace.as_deref(),
                server.metadata.name.as_deref(),
            ) else {
                continue;
            };
            if server.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let key = ServerKey {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            };
            let service = Kind::Server.workload_name(name);
            let mut endpoints = ready
                .get(&(ns.to_owned(), service))
                .cloned()
                .unwrap_or_default();
            endpoints.sort();
            endpoints.dedup();
            let not_ready = server.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Ready" && c.status != "True")
                    .map(|c| format!("{}: {}", c.reason, c.message))
            });
            let mut names = vec![name.to_owned()];
            names.extend(server.spec.served_model_names.iter().cloned());
            names.sort();
            names.dedup();
            // The adapters copied for the replicas to load (a new one is routed once its
            // copy is recorded), each answering to `<name>/<adapter>` under every name of
            // its Server.
            let loadable: BTreeMap<String, String> = server
                .status
                .iter()
                .flat_map(|s| &s.adapters)
                .filter(|a| server.spec.adapters.iter().any(|s| s.name == a.name))
                .map(|a| (a.name.clone(), a.path.clone()))
                .collect();
            let adapters: Vec<String> = names
                .iter()
                .flat_map(|n| loadable.keys().map(move |a| format!("{n}/{a}")))
                .collect();
            names.extend(adapters);
            for id in names {
                table.ids.entry(id).or_default().push(key.clone());
            }
            table.routes.insert(
                key.clone(),
                Route {
                    key,
                    endpoints,
                    replicas: server.spec.replicas(),
                    autoscaling: server.spec.autoscaling.clone(),
                    routing: server.spec.routing.clone().unwrap_or_default(),
                    not_ready,
                    adapters: loadable,
                },
            );
        }
        table
    }

    /// The Server a request's `model` names.
    pub fn lookup(&self, model: &str) -> Lookup<'_> {
        match self.ids.get(model).map(Vec::as_slice) {
            None | Some([]) => Lookup::Unknown,
            Some([key]) => self
                .routes
                .get(key)
                .map(Lookup::Found)
                .unwrap_or(Lookup::Unknown),
            Some(keys) => Lookup::Ambiguous(keys.iter().collect()),
        }
    }

    pub fn route(&self, key: &ServerKey) -> Option<&Route> {
        self.routes.get(key)
    }

    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Every model id, sorted.
    pub fn model_ids(&self) -> impl Iterator<Item = &str> {
        self.ids.keys().map(String::as_str)
    }
}

/// The ready, not terminating addresses of a slice, on its `http` port.
pub(crate) fn ready_addresses(slice: &EndpointSlice) -> Vec<SocketAddr> {
    let Some(port) = slice.ports.as_ref().and_then(|ports| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(PORT_NAME))
            .or(ports.first())
            .and_then(|p| p.port)
    }) else {
        return Vec::new();
    };
    let Ok(port) = u16::try_from(port) else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| {
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .filter_map(|e| e.addresses.first())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn server(ns: &str, name: &str, spec: serde_json::Value) -> Server {
        let mut spec = spec;
        spec["image"] = json!("img");
        spec["model"] = json!({"name": "m"});
        serde_json::from_value(json!({
            "apiVersion": "substratus.ai/v1", "kind": "Server",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .unwrap()
    }

    pub(crate) fn slice(ns: &str, service: &str, endpoints: &[(&str, bool)]) -> EndpointSlice {
        let eps: Vec<_> = endpoints
            .iter()
            .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-x"), "namespace": ns,
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps,
        }))
        .unwrap()
    }

    #[test]
    fn a_server_is_reached_by_its_name_and_its_served_names_at_its_ready_addresses() {
        let servers = [
            server(
                "a",
                "tiny",
                json!({"servedModelNames": ["gpt-tiny", "tiny"]}),
            ),
            server("a", "other", json!({})),
        ];
        let slices = [
            slice(
                "a",
                "tiny-server",
                &[("10.0.0.2", true), ("10.0.0.1", true), ("10.0.0.3", false)],
            ),
            // Another namespace's Service of the same name is not this Server's.
            slice("b", "tiny-server", &[("10.0.9.9", true)]),
        ];
        let t = Table::build(&servers, &slices);
        let Lookup::Found(r) = t.lookup("gpt-tiny") else {
            panic!("gpt-tiny: {:?}", t.lookup("gpt-tiny"))
        };
        assert_eq!(r.key.to_string(), "a/tiny");
        assert_eq!(
            r.endpoints,
            [
                "10.0.0.1:8080".parse().unwrap(),
                "10.0.0.2:8080".parse().unwrap()
            ]
        );
        assert!(matches!(t.lookup("tiny"), Lookup::Found(r) if r.key.name == "tiny"));
        let Lookup::Found(o) = t.lookup("other") else {
            panic!()
        };
        assert!(o.endpoints.is_empty());
        assert_eq!(t.lookup("m"), Lookup::Unknown);
        assert_eq!(
            t.model_ids().collect::<Vec<_>>(),
            ["gpt-tiny", "other", "tiny"]
        );
    }

    #[test]
    fn adapters_answer_to_server_slash_adapter_under_every_name_of_their_server() {
        let mut s = server(
            "a",
            "tiny",
            json!({"servedModelNames": ["gpt-tiny"],
                   "adapters": [{"name": "sql", "model": {"name": "tiny-sql"}},
                                {"name": "chat", "model": {"name": "tiny-chat"}}]}),
        );
        // Only copied adapters are routed: `chat` is still being copied, and `old` is a copy
        // of an adapter no longer listed.
        s.status = Some(
            serde_json::from_value(json!({"adapters": [
                {"name": "sql", "model": "tiny-sql", "generation": 2, "path": "/content/adapters/sql/2"},
                {"name": "old", "model": "tiny-old", "generation": 1, "path": "/content/adapters/old/1"},
            ]}))
            .unwrap(),
        );
        let servers = [s];
        let t = Table::build(&servers, &[]);
        assert_eq!(
            t.model_ids().collect::<Vec<_>>(),
            ["gpt-tiny", "gpt-tiny/sql", "tiny", "tiny/sql"]
        );
        assert!(matches!(t.lookup("gpt-tiny/sql"), Lookup::Found(r) if r.key.name == "tiny"));
        let Lookup::Found(r) = t.lookup("tiny/sql") else {
            panic!("tiny/sql")
        };
        assert_eq!(
            r.adapters,
            BTreeMap::from([("sql".to_owned(), "/content/adapters/sql/2".to_owned())])
        );
        assert_eq!(t.lookup("tiny/chat"), Lookup::Unknown);
        assert_eq!(t.lookup("tiny/old"), Lookup::Unknown);
        // The adapter's Model is not a name of the Server.
        assert_eq!(t.lookup("tiny-sql"), Lookup::Unknown);
        assert_eq!(t.lookup("tiny/other"), Lookup::Unknown);
    }

    #[test]
    fn a_name_two_servers_claim_is_ambiguous_and_terminating_servers_are_gone() {
        let mut leaving = server("c", "gone", json!({}));
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        let servers = [
            server("a", "x", json!({"servedModelNames": ["shared"]})),
            server("b", "y", json!({"servedModelNames": ["shared"]})),
            leaving,
        ];
        let t = Table::build(&servers, &[]);
        match t.lookup("shared") {
            Lookup::Ambiguous(keys) => assert_eq!(
                keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                ["a/x", "b/y"]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.lookup("gone"), Lookup::Unknown);
    }

    #[test]
    fn a_not_ready_server_says_why_and_carries_its_scaling_policy() {
        let mut s = server(
            "a",
            "big",
            json!({"replicas": 0, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}}),
        );
        s.status = Some(
            serde_json::from_value(json!({"ready": false, "conditions": [{
                "type": "Ready", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
            .unwrap(),
        );
        let t = Table::build([&s], []);
        let Lookup::Found(r) = t.lookup("big") else {
            panic!()
        };
        assert_eq!(r.replicas, 0);
        assert_eq!(r.autoscaling.as_ref().unwrap().max_replicas, 3);
        assert_eq!(
            r.not_ready.as_deref(),
            Some("Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu")
        );
    }
}
