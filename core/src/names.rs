//! Names, labels and storage prefixes of the children of each kind. These are a contract
//! with users, tooling and existing buckets: they match the original project byte for byte.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

pub use substratus_crds::Kind;

/// What each kind's children are called and run as: the names are a contract with users
/// and their tooling (`kubectl logs job/<name>-modeller`).
pub trait KindChildren {
    /// The service account the kind's workload runs as.
    fn run_role(self) -> Role;
    /// Name of the workload child: Job, Deployment or Pod.
    fn workload_name(self, name: &str) -> String;
    /// Name of the workload's main container (the pods' default container).
    fn container_name(self) -> &'static str;
}

impl KindChildren for Kind {
    fn run_role(self) -> Role {
        match self {
            Kind::Model => Role::Modeller,
            Kind::Dataset => Role::DataLoader,
            Kind::Server => Role::ModelServer,
            Kind::Notebook => Role::Notebook,
        }
    }

    fn workload_name(self, name: &str) -> String {
        match self {
            Kind::Model => format!("{name}-modeller"),
            Kind::Dataset => format!("{name}-data-loader"),
            Kind::Server => format!("{name}-server"),
            Kind::Notebook => format!("{name}-notebook"),
        }
    }

    fn container_name(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Dataset => "load",
            Kind::Server => "serve",
            Kind::Notebook => "notebook",
        }
    }
}

/// Per-namespace service accounts, one per role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    ContainerBuilder,
    Modeller,
    DataLoader,
    ModelServer,
    Notebook,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::ContainerBuilder,
        Role::Modeller,
        Role::DataLoader,
        Role::ModelServer,
        Role::Notebook,
    ];

    /// The role whose ServiceAccount is named `name`.
    pub fn of_service_account(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.service_account() == name)
    }

    pub fn service_account(self) -> &'static str {
        match self {
            Role::ContainerBuilder => "container-builder",
            Role::Modeller => "modeller",
            Role::DataLoader => "data-loader",
            Role::ModelServer => "model-server",
            Role::Notebook => "notebook",
        }
    }
}

/// Label on every child this operator manages (lets watches select only our objects).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "substratus";
/// The one field manager for everything the operator writes.
pub const FIELD_MANAGER: &str = "substratus-operator";
/// Annotation holding the hash of the desired state a child was applied from.
pub const SPEC_HASH_ANNOTATION: &str = "substratus.ai/spec-hash";
/// Label the backends put on a static volume: the claim it was made for.
pub const CLAIM_LABEL: &str = "substratus.ai/claim";
/// Label naming the claim's namespace.
pub const CLAIM_NAMESPACE_LABEL: &str = "substratus.ai/claim-namespace";
/// Annotation naming a pod's default container (used by `kubectl logs/exec`).
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// `<name>-<kind>-params`
pub fn params_config_map(kind: Kind, name: &str) -> String {
    format!("{name}-{}-params", kind.lower())
}

/// `<name>-<kind>-bld`
pub fn build_job(kind: Kind, name: &str) -> String {
    format!("{name}-{}-bld", kind.lower())
}

/// `<name>-notebook-token`: the Secret holding a Notebook's Jupyter token.
pub fn notebook_token_secret(name: &str) -> String {
    format!("{name}-notebook-token")
}

/// Labels of a workload's pods: `<kind>: <name>`, `role: run`.
pub fn run_labels(kind: Kind, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (kind.lower().to_owned(), name.to_owned()),
        ("role".to_owned(), "run".to_owned()),
    ])
}

/// The storage prefix of an object: hex MD5 of
/// `clusters/<cluster>/namespaces/<ns>/<kind>s/<name>`.
pub fn storage_prefix(cluster: &str, namespace: &str, kind: Kind, name: &str) -> String {
    let input = format!(
        "clusters/{cluster}/namespaces/{namespace}/{}s/{name}",
        kind.lower()
    );
    let digest = Md5::digest(input.as_bytes());
    hex(&digest)
}

/// `<base>-<namespace>` for a cloud resource named per namespace, or, when that is longer than
/// `max`, with the namespace shortened and the first 8 hex digits of its MD5 appended, so
/// that two namespaces never share a name.
pub fn per_namespace(base: &str, namespace: &str, max: usize) -> String {
    let name = format!("{base}-{namespace}");
    if name.len() <= max {
        return name;
    }
    let digest = hex(&Md5::digest(namespace.as_bytes()));
    let keep = max.saturating_sub(base.len() + 2 + 8);
    let head = namespace[..keep.min(namespace.len())].trim_end_matches('-');
    format!("{base}-{head}-{}", &digest[..8])
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_prefix_matches_the_original() {
        assert_eq!(
            storage_prefix("my-cluster", "my-ns", Kind::Model, "my-model"),
            "93ea94b18012ca14d84e1468d65e8709"
        );
    }

    #[test]
    fn storage_prefix_depends_on_every_part() {
        let base = storage_prefix("c", "ns", Kind::Model, "m");
        assert_ne!(base, storage_prefix("c2", "ns", Kind::Model, "m"));
        assert_ne!(base, storage_prefix("c", "ns2", Kind::Model, "m"));
        assert_ne!(base, storage_prefix("c", "ns", Kind::Dataset, "m"));
        assert_ne!(base, storage_prefix("c", "ns", Kind::Model, "m2"));
    }

    #[test]
    fn child_names_match_the_original() {
        assert_eq!(Kind::Model.workload_name("foo"), "foo-modeller");
        assert_eq!(Kind::Dataset.workload_name("foo"), "foo-data-loader");
        assert_eq!(Kind::Server.workload_name("foo"), "foo-server");
        assert_eq!(Kind::Notebook.workload_name("foo"), "foo-notebook");
        assert_eq!(params_config_map(Kind::Model, "foo"), "foo-model-params");
        assert_eq!(build_job(Kind::Dataset, "foo"), "foo-dataset-bld");
        assert_eq!(Kind::Dataset.container_name(), "load");
    }

    #[test]
    fn the_longest_child_name_of_the_longest_allowed_name_fits_63() {
        // Limits enforced by the CRD schema (crds/src/kinds.rs).
        for (kind, max) in [
            (Kind::Model, 50),
            (Kind::Dataset, 48),
            (Kind::Server, 49),
            (Kind::Notebook, 47),
        ] {
            let name = "x".repeat(max);
            let mut children = vec![
                kind.workload_name(&name),
                params_config_map(kind, &name),
                build_job(kind, &name),
            ];
            if kind == Kind::Notebook {
                children.push(notebook_token_secret(&name));
            }
            for child in children {
                assert!(
                    child.len() <= 63,
                    "{kind:?}: {child} has {} characters",
                    child.len()
                );
            }
        }
    }
}
