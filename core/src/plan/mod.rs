//! Pure planners: `(object, observed children and references) -> desired children + status`.
//! Nothing in here does I/O; the reconcilers in [`crate::reconcile`] apply the plans.
//!
//! This module holds what every kind shares: the container contract (`/content/...`), the
//! params ConfigMap, resources and GPU placement, and the hash that lets a reconcile skip
//! children that are already as desired.

pub mod batch;
pub mod build;
#[cfg(test)]
mod fixtures;
pub mod image;
pub mod job;
pub mod notebook;
mod pods;
pub mod server;
pub mod storage;
pub mod upload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use substratus_crds::{Params, Resources};

use crate::cloud::{Access, Cloud, CloudError, PrefixFolder};
use crate::conditions::{Desired, reasons};
use crate::names::{
    self, DEFAULT_CONTAINER_ANNOTATION, Kind, KindChildren, MANAGED_BY, MANAGED_BY_LABEL, Role,
};

pub use crate::names::SPEC_HASH_ANNOTATION;
pub use pods::{exit_of, pod_problem, pod_progress};
/// Annotation on a workload naming the parent generation it runs for.
pub const GENERATION_ANNOTATION: &str = "substratus.ai/generation";
/// Group id that owns mounted content (as in the original).
pub const CONTENT_FS_GROUP: i64 = 3003;

/// The parent object a plan is for.
#[derive(Clone, Debug)]
pub struct Parent {
    pub kind: Kind,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: Option<i64>,
}

impl Parent {
    /// The controller owner reference children carry.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: substratus_crds::API_VERSION.into(),
            kind: self.kind.name().into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Metadata of a child: name, namespace, managed-by label, owner reference.
    pub fn child_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (self.kind.lower().to_owned(), self.name.clone()),
            ])),
            owner_references: Some(vec![self.owner_reference()]),
            ..Default::default()
        }
    }
}

/// A child object to create or update.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    ConfigMap(ConfigMap),
    Secret(k8s_openapi::api::core::v1::Secret),
    Job(k8s_openapi::api::batch::v1::Job),
    Deployment(k8s_openapi::api::apps::v1::Deployment),
    Service(k8s_openapi::api::core::v1::Service),
    Pod(Pod),
    /// Anything a cloud asks for (e.g. PersistentVolume/Claim), as JSON with apiVersion/kind.
    Raw(serde_json::Value),
}

impl Child {
    /// The child as the JSON object sent to the API server, with its `apiVersion` and `kind`.
    pub fn to_value(&self) -> serde_json::Value {
        fn typed<K: k8s_openapi::Resource + Serialize>(o: &K) -> serde_json::Value {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("apiVersion".into(), K::API_VERSION.into());
                m.insert("kind".into(), K::KIND.into());
            }
            v
        }
        match self {
            Child::ConfigMap(o) => typed(o),
            Child::Secret(o) => typed(o),
            Child::Job(o) => typed(o),
            Child::Deployment(o) => typed(o),
            Child::Service(o) => typed(o),
            Child::Pod(o) => typed(o),
            Child::Raw(v) => v.clone(),
        }
    }
}

/// The kinds of child a plan may delete: the ones never updated in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletable {
    Job,
    Pod,
}

impl Deletable {
    pub fn name(self) -> &'static str {
        match self {
            Deletable::Job => "Job",
            Deletable::Pod => "Pod",
        }
    }
}

/// A child to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub kind: Deletable,
    pub name: String,
}

/// What a planner asks for, the same shape for every kind (and for the build step), so that
/// one [`crate::reconcile`] tail carries out every plan: deletions, the ServiceAccount,
/// applies, creates; then status from `conditions`, `ready` and the kind's `extra`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan<X> {
    /// Children kept as desired (applied when their hash differs).
    pub children: Vec<Child>,
    /// Children created only when missing, never updated (Jobs, Pods, the token Secret).
    pub create: Vec<Child>,
    pub delete: Vec<Deletion>,
    /// The role whose ServiceAccount must exist before the children are written: set when
    /// the plan starts a workload.
    pub account: Option<Role>,
    /// The main condition and the aggregate `Ready`.
    pub conditions: Vec<Desired>,
    pub ready: bool,
    /// Look again after this long even if nothing changes (e.g. an old Job being deleted).
    pub next_look: Option<std::time::Duration>,
    /// What the kind adds to its status.
    pub extra: X,
}

/// How soon a plan that waits on something no watch tells of looks again.
pub const SOON: std::time::Duration = std::time::Duration::from_secs(1);

impl<X> Plan<X> {
    /// An empty plan with the kind's extra.
    pub fn new(extra: X) -> Plan<X> {
        Plan {
            children: Vec::new(),
            create: Vec::new(),
            delete: Vec::new(),
            account: None,
            conditions: Vec::new(),
            ready: false,
            next_look: None,
            extra,
        }
    }

    /// The Job the plan creates, if any.
    pub fn job(&self) -> Option<&k8s_openapi::api::batch::v1::Job> {
        self.create.iter().find_map(|c| match c {
            Child::Job(j) => Some(j),
            _ => None,
        })
    }

    /// Deletes the child `name` to replace it, and looks again soon to make its successor.
    pub fn replace(&mut self, kind: Deletable, name: String) {
        self.delete.push(Deletion { kind, name });
        self.next_look = Some(SOON);
    }

    /// Starts the workload `child` as `role`.
    pub fn start(&mut self, role: Role, child: Child) {
        self.account = Some(role);
        self.create.push(child);
    }
}

/// Hex MD5 of a value's JSON: compared with [`SPEC_HASH_ANNOTATION`] to skip no-op applies.
pub fn spec_hash<T: Serialize>(value: &T) -> String {
    use md5::{Digest, Md5};
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    names::hex(&Md5::digest(&bytes))
}

/// Sets the spec-hash annotation of `meta` to the hash of `body` (computed without it).
pub fn stamp_hash<T: Serialize>(meta_of: impl Fn(&mut T) -> &mut ObjectMeta, mut obj: T) -> T {
    let hash = spec_hash(&obj);
    meta_of(&mut obj)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SPEC_HASH_ANNOTATION.to_owned(), hash);
    obj
}

/// The params ConfigMap: `params.json` is `spec.params` as indented JSON with sorted keys,
/// `{}` when empty.
pub fn params_config_map(parent: &Parent, params: &Params) -> ConfigMap {
    let json = serde_json::to_string_pretty(params).unwrap_or_else(|_| "{}".to_owned());
    let cm = ConfigMap {
        metadata: parent.child_meta(names::params_config_map(parent.kind, &parent.name)),
        data: Some(BTreeMap::from([("params.json".to_owned(), json)])),
        ..Default::default()
    };
    stamp_hash(|c: &mut ConfigMap| &mut c.metadata, cm)
}

/// A bucket prefix mounted at `/content/<subdir>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    /// `artifacts`, `data`, `model` or `adapters`.
    pub subdir: std::borrow::Cow<'static, str>,
    pub folder: PrefixFolder,
    pub access: Access,
    /// For a reference's artifacts: the generation of the run that wrote them.
    pub generation: Option<i64>,
}

/// Pod annotation `substratus.ai/<subdir>-generation`: the generation of the run that wrote
/// a mounted reference's artifacts. When a Model runs again, this changes in the pod
/// templates of everything that mounts it, so Servers roll and Notebook pods are replaced
/// onto the new artifacts. A first run's artifacts carry no annotation: pods started before
/// it existed are not restarted by an upgrade of the operator.
pub fn input_generation_annotation(subdir: &str) -> String {
    format!("substratus.ai/{subdir}-generation")
}

/// The container contract's mounts: the object's own `artifacts/` read-write at
/// `/content/artifacts`, and the Ready references' artifacts read-only at `/content/data`
/// (Dataset) and `/content/model` (Model).
pub fn content_mounts(
    own: PrefixFolder,
    dataset: &Option<RefState>,
    model: &Option<RefState>,
) -> Vec<Mount> {
    let mut mounts = vec![Mount {
        subdir: "artifacts".into(),
        folder: own,
        access: Access::ReadWrite,
        generation: None,
    }];
    if let Some(RefState::Ready {
        artifacts,
        generation,
    }) = dataset
    {
        mounts.push(Mount {
            subdir: "data".into(),
            folder: artifacts.clone(),
            access: Access::ReadOnly,
            generation: Some(*generation),
        });
    }
    if let Some(RefState::Ready {
        artifacts,
        generation,
    }) = model
    {
        mounts.push(Mount {
            subdir: "model".into(),
            folder: artifacts.clone(),
            access: Access::ReadOnly,
            generation: Some(*generation),
        });
    }
    mounts
}

/// An HTTP port the container serves, with its readiness path.
#[derive(Clone, Debug, PartialEq)]
pub struct ServingPort {
    pub name: &'static str,
    pub port: i32,
    pub readiness_path: &'static str,
}

/// What a workload pod is made of.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    pub parent: &'a Parent,
    pub image: &'a str,
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub extra_env: Vec<EnvVar>,
    pub resources: Option<&'a Resources>,
    pub mounts: Vec<Mount>,
    pub port: Option<ServingPort>,
    pub restart_policy: &'static str,
}

/// A planning failure the object's status must show.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

impl From<CloudError> for Blocked {
    fn from(e: CloudError) -> Blocked {
        match e {
            CloudError::Permanent { reason, message } => Blocked { reason, message },
            CloudError::Transient(message) => Blocked {
                reason: reasons::CLOUD_ERROR,
                message,
            },
        }
    }
}

fn quantity(s: String) -> Quantity {
    Quantity(s)
}

/// Adds `volume` to a pod's `volumes` as `name` and returns the name its mounts use. A volume
/// mounted by `subPath` (a namespace's) is added once: a second folder of it mounts the pod
/// volume already there, so the pod holds one mount of it, not one per folder.
fn shared_volume(
    volumes: &mut Vec<Volume>,
    mut volume: Volume,
    by_sub_path: bool,
    name: String,
) -> String {
    if by_sub_path
        && let Some(same) = volumes.iter().find(|v| {
            Volume {
                name: String::new(),
                ..(*v).clone()
            } == volume
        })
    {
        return same.name.clone();
    }
    volume.name = name.clone();
    volumes.push(volume);
    name
}

/// The pod template of a workload, following the container contract.
pub fn pod_template(w: &Workload<'_>, cloud: &dyn Cloud) -> Result<PodTemplateSpec, Blocked> {
    let kind = w.parent.kind;
    let container_name = kind.container_name();

    let mut labels = names::run_labels(kind, &w.parent.name);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels.extend(cloud.pod_identity_labels());
    let mut annotations = BTreeMap::from([(
        DEFAULT_CONTAINER_ANNOTATION.to_owned(),
        container_name.to_owned(),
    )]);

    let mut volumes = vec![Volume {
        name: "params".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::params_config_map(kind, &w.parent.name),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "params".into(),
        mount_path: "/content/params.json".into(),
        sub_path: Some("params.json".into()),
        read_only: Some(true),
        ..Default::default()
    }];
    for m in &w.mounts {
        let bv = cloud.bucket_volume(&m.folder, m.access)?;
        // `adapters/<name>` is volume `adapters-<name>`.
        let mount_name = m.subdir.replace('/', "-");
        annotations.extend(bv.pod_annotations);
        if let Some(g) = m.generation.filter(|g| *g > 1) {
            annotations.insert(input_generation_annotation(&mount_name), g.to_string());
        }
        let volume_name = shared_volume(&mut volumes, bv.volume, bv.sub_path.is_some(), mount_name);
        mounts.push(VolumeMount {
            name: volume_name,
            mount_path: format!("/content/{}", m.subdir),
            read_only: Some(m.access == Access::ReadOnly),
            sub_path: bv.sub_path,
            ..Default::default()
        });
    }

    let defaults = cloud.default_resources();
    let (cpu, memory, disk) = match w.resources {
        Some(r) => (r.cpu, r.memory, r.disk),
        None => (defaults.cpu, defaults.memory_gib, defaults.disk_gib),
    };
    let mut requests = BTreeMap::new();
    if cpu > 0 {
        requests.insert("cpu".to_owned(), quantity(cpu.to_string()));
    }
    if memory > 0 {
        requests.insert("memory".to_owned(), quantity(format!("{memory}Gi")));
    }
    if disk > 0 {
        requests.insert(
            "ephemeral-storage".to_owned(),
            quantity(format!("{disk}Gi")),
        );
    }
    let mut limits = BTreeMap::new();
    let mut placement = None;
    if let Some(gpu) = w
        .resources
        .and_then(|r| r.gpu.as_ref())
        .filter(|g| g.count() > 0)
    {
        let gpus = quantity(gpu.count().to_string());
        requests.insert("nvidia.com/gpu".to_owned(), gpus.clone());
        limits.insert("nvidia.com/gpu".to_owned(), gpus);
        placement = Some(cloud.gpu_placement(gpu.gpu_type, gpu.count())?);
    }

    let mut env = crate::env::container_env(w.env);
    env.extend(w.extra_env.iter().cloned());

    let mut container = Container {
        name: container_name.to_owned(),
        image: Some(w.image.to_owned()),
        command: (!w.command.is_empty()).then(|| w.command.to_vec()),
        env: (!env.is_empty()).then_some(env),
        working_dir: Some("/content".into()),
        volume_mounts: Some(mounts),
        resources: Some(ResourceRequirements {
            requests: (!requests.is_empty()).then_some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..Default::default()
        }),
        ports: w.port.as_ref().map(|p| {
            vec![ContainerPort {
                name: Some(p.name.to_owned()),
                container_port: p.port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]
        }),
        readiness_probe: w.port.as_ref().map(|p| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(p.readiness_path.to_owned()),
                port: IntOrString::String(p.name.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    harden(&mut container);

    let placement = placement.unwrap_or_default();
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(volumes),
            service_account_name: Some(kind.run_role().service_account().to_owned()),
            automount_service_account_token: Some(false),
            restart_policy: Some(w.restart_policy.to_owned()),
            security_context: Some(PodSecurityContext {
                fs_group: Some(CONTENT_FS_GROUP),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..Default::default()
            }),
            node_selector: (!placement.node_selector.is_empty()).then_some(placement.node_selector),
            tolerations: (!placement.tolerations.is_empty()).then_some(placement.tolerations),
            affinity: placement.affinity,
            ..Default::default()
        }),
    })
}

/// The container runtime's default seccomp profile, for every pod the operator makes.
pub fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    }
}

/// Every container the operator makes: no privilege gained through setuid binaries or file
/// capabilities (`allowPrivilegeEscalation: false`).
///
/// Pods also mount no Kubernetes API token (`automountServiceAccountToken: false`): no
/// workload talks to the API server, and each cloud's workload identity brings its own
/// credential (GKE's metadata server, the projected tokens that EKS's and AKS's identity
/// webhooks inject), so the token would only be something to steal.
pub fn harden(container: &mut Container) {
    container
        .security_context
        .get_or_insert_with(SecurityContext::default)
        .allow_privilege_escalation = Some(false);
}

/// The state of a referenced Model or Dataset.
#[derive(Clone, Debug, PartialEq)]
pub enum RefState {
    NotFound,
    NotReady,
    /// Ready, with its `artifacts/` folder and the generation of the run that wrote them (0
    /// when not known).
    Ready {
        artifacts: PrefixFolder,
        generation: i64,
    },
}

/// The chain of base Models that leads from Model `start` back to itself, if any
/// (`[start, b, …, start]`), following `base_of` (a Model's `spec.model.name`). Bounded:
/// a chain longer than 64 that has not come back is not a cycle through `start`.
pub fn base_cycle(start: &str, base_of: impl Fn(&str) -> Option<String>) -> Option<Vec<String>> {
    let mut chain = vec![start.to_owned()];
    let mut at = start.to_owned();
    for _ in 0..64 {
        at = base_of(&at)?;
        chain.push(at.clone());
        if at == start {
            return Some(chain);
        }
        if chain[..chain.len() - 1].contains(&at) {
            // A cycle that does not pass through `start`: its own Models report it.
            return None;
        }
    }
    None
}

/// The aggregate `Ready` condition mirrors the kind's main condition.
pub fn ready_condition(main: &Desired) -> Desired {
    Desired::new(
        crate::conditions::types::READY,
        main.status,
        main.reason,
        main.message.clone(),
    )
}

/// A kind's main condition of type `type_` and the `Ready` that mirrors it.
pub fn with_ready(
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: impl Into<String>,
) -> Vec<Desired> {
    let main = Desired::new(type_, status, reason, message);
    let ready = ready_condition(&main);
    vec![main, ready]
}

/// `Serving` (Servers and Notebooks) and `Ready`.
pub fn serving(status: bool, reason: &'static str, message: impl Into<String>) -> Vec<Desired> {
    with_ready(crate::conditions::types::SERVING, status, reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_of_base_models_is_found_from_any_of_its_models() {
        let bases: BTreeMap<&str, &str> =
            [("a", "b"), ("b", "c"), ("c", "a"), ("x", "a"), ("y", "z")]
                .into_iter()
                .collect();
        let base_of = |m: &str| bases.get(m).map(|b| b.to_string());
        assert_eq!(base_cycle("a", base_of).unwrap(), ["a", "b", "c", "a"]);
        assert_eq!(base_cycle("c", base_of).unwrap(), ["c", "a", "b", "c"]);
        // Leading into a cycle is not being in one; a chain that ends is none.
        assert_eq!(base_cycle("x", base_of), None);
        assert_eq!(base_cycle("y", base_of), None);
        assert_eq!(base_cycle("unknown", base_of), None);
    }
}
