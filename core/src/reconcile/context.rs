//! What every reconciler works with: the API client, the caches, the cloud, metrics, and the
//! writes they share (typed and raw apply, create, delete, service accounts and identity,
//! references, Events).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::cloud::Cloud;
use crate::conditions::{self, types};
use crate::metrics::Metrics;
use crate::names::{Kind, MANAGED_BY, MANAGED_BY_LABEL, Role};
use crate::plan::storage::artifact_prefix;
use crate::plan::{Child, Deletable, Deletion, Parent, RefState};
use crate::watch::Caches;

pub use crate::names::FIELD_MANAGER;
/// Annotation on a role's ServiceAccount naming the principal it was bound to.
pub const IDENTITY_BOUND_ANNOTATION: &str = "substratus.ai/identity-bound";

/// How long a ServiceAccount just ensured may be missing from the cache (its watch event is
/// on the way) before it counts as gone.
const ACCOUNT_CACHE_LAG: Duration = Duration::from_secs(30);

/// What every reconciler shares.
pub struct Context {
    pub client: Client,
    pub cloud: Arc<dyn Cloud>,
    pub metrics: Arc<Metrics>,
    /// The builder images and the upload URL lifetime.
    pub build: crate::plan::build::BuildSettings,
    /// How long one cloud call may take (see [`crate::cloud::within`]).
    pub cloud_timeout: Duration,
    events: events::Events,
    /// (namespace, service account) pairs already ensured and bound, and when. With the
    /// caches, an entry counts only while the cache shows the ServiceAccount (or for
    /// [`ACCOUNT_CACHE_LAG`] after it was ensured): one deleted by someone, or with its
    /// namespace, is ensured again.
    ensured_accounts: Mutex<HashMap<(String, &'static str), std::time::Instant>>,
    /// Serialises the slow path of [`Context::ensure_service_account`], so that concurrent
    /// reconciles in one namespace bind the identity once, not once each.
    ensuring: tokio::sync::Mutex<()>,
    /// When each namespace's cloud objects were last applied (see
    /// [`Context::ensure_namespace_objects`]).
    namespace_objects_applied: Mutex<HashMap<String, std::time::Instant>>,
    /// Watch-fed caches: every read of a reconcile comes from them.
    caches: Caches,
    /// The status last written per object, with the resourceVersion it produced: a reconcile
    /// triggered by a child's event may see its parent from before that write, and must not
    /// take the older status for the current one (it would write it again).
    pub(crate) written: WrittenStatus,
    /// Consecutive failures of the objects failing now.
    pub(crate) backoff: failure::Backoff,
}

/// The status last written per object with the resourceVersion it produced, kept only until
/// the cache shows that version: then the object's own status is at least as new, and the
/// entry is dropped (the write's own watch event triggers the reconcile that drops it).
#[derive(Default)]
pub(crate) struct WrittenStatus(Mutex<std::collections::HashMap<String, (u64, serde_json::Value)>>);

impl WrittenStatus {
    pub(crate) fn record(&self, key: String, rv: u64, status: serde_json::Value) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (rv, status));
    }

    /// The status written last for `key` when the object read (at `rv`) is older than that
    /// write, else `None`, forgetting a write the object read has caught up with.
    fn newer_than(&self, key: &str, rv: Option<u64>) -> Option<serde_json::Value> {
        let mut written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (written_rv, _) = written.get(key)?;
        match rv {
            Some(rv) if rv < *written_rv => written.get(key).map(|(_, v)| v.clone()),
            Some(_) => {
                written.remove(key);
                None
            }
            None => None,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Context {
    /// A context reading `caches` (see [`crate::watch::Watches`]).
    pub fn new(
        client: Client,
        cloud: Arc<dyn Cloud>,
        metrics: Arc<Metrics>,
        caches: Caches,
    ) -> Context {
        Context {
            events: events::Events::new(
                client.clone(),
                FIELD_MANAGER,
                std::env::var("POD_NAME").ok(),
            ),
            client,
            cloud,
            metrics,
            build: Default::default(),
            cloud_timeout: crate::cloud::CALL_TIMEOUT,
            ensured_accounts: Mutex::new(HashMap::new()),
            ensuring: tokio::sync::Mutex::new(()),
            namespace_objects_applied: Mutex::new(HashMap::new()),
            caches,
            written: WrittenStatus::default(),
            backoff: failure::Backoff::default(),
        }
    }

    /// The same context with these build settings.
    pub fn with_build(mut self, build: crate::plan::build::BuildSettings) -> Context {
        self.build = build;
        self
    }

    /// The object's current status: its own, or the one this operator wrote last when the
    /// object at hand is older than that write.
    pub fn fresh_status<K, S>(&self, obj: &K, status: Option<S>) -> Option<S>
    where
        K: Resource<DynamicType = ()>,
        S: DeserializeOwned,
    {
        let rv = obj
            .meta()
            .resource_version
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok());
        match self.written.newer_than(&status_key(obj), rv) {
            Some(value) => serde_json::from_value(value).ok().or(status),
            None => status,
        }
    }

    /// The caches every read comes from.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    pub(super) fn patch_params(&self) -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    fn count_child_write(&self, kind: &str) {
        self.metrics
            .child_writes
            .get_or_create(&crate::metrics::KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// What the cloud needs in place before anything of `namespace` is planned (on AKS with
    /// namespace tenancy, the namespace's managed identity): [`Cloud::prepare_namespace`]
    /// under the cloud timeout. Free once the backend has done it.
    pub async fn prepare_namespace(&self, namespace: &str) -> Result<(), Error> {
        const STEP: &str = "preparing the namespace's cloud identity";
        let call = self.cloud.prepare_namespace(namespace);
        crate::cloud::within(STEP, self.cloud_timeout, call)
            .await
            .map_err(|source| Error::Cloud {
                step: STEP,
                object: namespace.to_owned(),
                source,
            })?;
        self.ensure_namespace_objects(namespace).await
    }

    /// Applies the cloud's objects of `namespace` ([`Cloud::namespace_objects`]) unless they
    /// were applied within [`ACCOUNT_CACHE_LAG`]; after that, an object the cache shows
    /// unchanged costs no request, and one deleted by someone is made again.
    async fn ensure_namespace_objects(&self, namespace: &str) -> Result<(), Error> {
        let recent = |ctx: &Context| {
            ctx.namespace_objects_applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(namespace)
                .is_some_and(|at| at.elapsed() < ACCOUNT_CACHE_LAG)
        };
        if recent(self) {
            return Ok(());
        }
        let children = crate::plan::storage::namespace_objects(self.cloud.as_ref(), namespace);
        if children.is_empty() {
            return Ok(());
        }
        // Concurrent reconciles in one namespace apply them once, not once each.
        let _guard = self.ensuring.lock().await;
        if recent(self) {
            return Ok(());
        }
        self.apply_children(namespace, &children).await?;
        self.namespace_objects_applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_owned(), std::time::Instant::now());
        Ok(())
    }

    /// Ensures the role's ServiceAccount in `namespace` exists with the cloud's annotations
    /// and that the cloud identity is bound to it, once per (namespace, role): a binding
    /// recorded on the ServiceAccount is never repeated.
    pub async fn ensure_service_account(&self, namespace: &str, role: Role) -> Result<(), Error> {
        let sa_name = role.service_account();
        let key = (namespace.to_owned(), sa_name);
        let ensured = |ctx: &Context| {
            let Some(at) = ctx
                .ensured_accounts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .copied()
            else {
                return false;
            };
            at.elapsed() < ACCOUNT_CACHE_LAG
                || ctx
                    .caches
                    .service_accounts
                    .get(&kube::runtime::reflector::ObjectRef::new(sa_name).within(namespace))
                    .is_some()
        };
        if ensured(self) {
            return Ok(());
        }
        // Concurrent reconciles in one namespace must bind the identity once, not once each.
        let _guard = self.ensuring.lock().await;
        if ensured(self) {
            return Ok(());
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let existing = self
            .caches
            .service_accounts
            .get(&kube::runtime::reflector::ObjectRef::new(sa_name).within(namespace))
            .map(|m| ServiceAccount {
                metadata: m.metadata.clone(),
                ..Default::default()
            });
        self.prepare_namespace(namespace).await?;
        let wanted = self
            .cloud
            .service_account_annotations(namespace, role)
            .map_err(|source| Error::Cloud {
                step: "annotating the ServiceAccount",
                object: format!("{namespace}/{sa_name}"),
                source,
            })?;
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(sa_name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_owned(),
                    MANAGED_BY.to_owned(),
                )])),
                annotations: Some(wanted.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let annotations = match existing {
            Some(found) => found.annotations().clone(),
            // Not among the accounts it manages: create it, and never take over an account
            // of that name that someone else made (its pods would run as our role).
            None => self.create_service_account(&api, namespace, &sa).await?,
        };
        let needs_apply = wanted.iter().any(|(k, v)| annotations.get(k) != Some(v));
        if needs_apply {
            api.patch(sa_name, &self.patch_params(), &Patch::Apply(&sa))
                .await
                .map_err(kube_err(
                    "applying ServiceAccount",
                    format!("{namespace}/{sa_name}"),
                ))?;
            self.count_child_write("ServiceAccount");
        }
        let principal = self.cloud.workload_principal(namespace);
        if principal.is_some() && annotations.get(IDENTITY_BOUND_ANNOTATION) != principal.as_ref() {
            let call = self.cloud.bind_identity(namespace, sa_name);
            let bound = crate::cloud::within("binding cloud identity", self.cloud_timeout, call)
                .await
                .map_err(|source| Error::Cloud {
                    step: "binding cloud identity",
                    object: format!("{namespace}/{sa_name}"),
                    source,
                })?;
            if let Some(p) = bound {
                let patch = serde_json::json!({"metadata": {"annotations": {IDENTITY_BOUND_ANNOTATION: p}}});
                api.patch(sa_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube_err(
                        "recording the identity binding",
                        format!("{namespace}/{sa_name}"),
                    ))?;
                self.count_child_write("ServiceAccount");
            }
        }
        self.ensured_accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, std::time::Instant::now());
        Ok(())
    }

    /// Creates a role's ServiceAccount; one that exists already is taken only when it carries
    /// the managed-by label (made by the operator, not yet in its cache). Returns the
    /// annotations the account has.
    async fn create_service_account(
        &self,
        api: &Api<ServiceAccount>,
        namespace: &str,
        sa: &ServiceAccount,
    ) -> Result<BTreeMap<String, String>, Error> {
        let name = sa.name_any();
        let object = format!("{namespace}/{name}");
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&params, sa).await {
            Ok(made) => {
                self.count_child_write("ServiceAccount");
                return Ok(made.annotations().clone());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(kube_err("creating ServiceAccount", object)(e)),
        }
        let found = api
            .get_metadata(&name)
            .await
            .map_err(kube_err("reading ServiceAccount", object.clone()))?;
        if found.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
            return Err(Error::AccountNotManaged(object));
        }
        Ok(found.annotations().clone())
    }

    /// Forgets that a ServiceAccount was ensured: it was deleted.
    pub fn forget_account(&self, namespace: &str, name: &str) {
        self.ensured_accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(ns, sa), _| !(ns == namespace && *sa == name));
    }

    /// Applies a child unless the observed one already carries the same spec hash.
    /// Applies children that do not depend on each other's existence (a claim binds to its
    /// volume whenever both exist) all at once: one round trip instead of one per child.
    pub async fn apply_children(&self, namespace: &str, children: &[Child]) -> Result<(), Error> {
        futures::future::try_join_all(children.iter().map(|c| self.apply_child(namespace, c)))
            .await
            .map(drop)
    }

    pub async fn apply_child(&self, namespace: &str, child: &Child) -> Result<(), Error> {
        match child {
            Child::ConfigMap(o) => self.apply_typed::<ConfigMap>(namespace, o).await,
            Child::Secret(o) => self.apply_typed::<Secret>(namespace, o).await,
            Child::Job(o) => self.apply_typed::<Job>(namespace, o).await,
            Child::Deployment(o) => self.apply_typed::<Deployment>(namespace, o).await,
            Child::Service(o) => self.apply_typed::<Service>(namespace, o).await,
            Child::Pod(o) => self.apply_typed::<Pod>(namespace, o).await,
            Child::Raw(v) => self.apply_raw(namespace, v).await,
        }
    }

    async fn apply_typed<K>(&self, namespace: &str, obj: &K) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let what = format!("{} {namespace}/{name}", K::kind(&()));
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let desired = hash_of(obj.meta()).cloned();
        let observed = self
            .caches
            .child_hash(&K::kind(&()), namespace, &name)
            .flatten();
        if desired.is_some() && observed == desired {
            return Ok(());
        }
        api.patch(&name, &self.patch_params(), &Patch::Apply(obj))
            .await
            .map_err(kube_err("applying", what))?;
        self.count_child_write(&K::kind(&()));
        Ok(())
    }

    async fn apply_raw(&self, namespace: &str, v: &serde_json::Value) -> Result<(), Error> {
        let obj: DynamicObject = serde_json::from_value(v.clone())
            .map_err(|e| Error::Invalid(format!("cloud object: {e}")))?;
        let types = obj
            .types
            .clone()
            .ok_or_else(|| Error::Invalid("cloud object without apiVersion/kind".into()))?;
        let gvk = GroupVersionKind::try_from(&types).map_err(|e| Error::Invalid(e.to_string()))?;
        let ar = ApiResource::from_gvk(&gvk);
        let name = obj.name_any();
        let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
            Some(_) => Api::namespaced_with(self.client.clone(), namespace, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let what = format!("{} {name}", gvk.kind);
        let desired = hash_of(&obj.metadata).cloned();
        let observed = self
            .caches
            .child_hash(&gvk.kind, namespace, &name)
            .flatten();
        if desired.is_some() && observed == desired {
            return Ok(());
        }
        api.patch(&name, &self.patch_params(), &Patch::Apply(&obj))
            .await
            .map_err(kube_err("applying", what))?;
        self.count_child_write(&gvk.kind);
        Ok(())
    }

    /// Creates a child unless it exists (for objects never updated: Jobs, Pods, Secrets).
    pub async fn create_child(&self, namespace: &str, child: &Child) -> Result<(), Error> {
        async fn create<K>(ctx: &Context, namespace: &str, obj: &K) -> Result<(), Error>
        where
            K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
                + Clone
                + Serialize
                + DeserializeOwned
                + std::fmt::Debug,
        {
            let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
            let name = obj.meta().name.clone().unwrap_or_default();
            match api
                .create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    obj,
                )
                .await
            {
                Ok(_) => {
                    ctx.count_child_write(&K::kind(&()));
                    Ok(())
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(kube_err(
                    "creating",
                    format!("{} {namespace}/{name}", K::kind(&())),
                )(e)),
            }
        }
        match child {
            Child::Job(o) => create(self, namespace, o).await,
            Child::Pod(o) => create(self, namespace, o).await,
            Child::Secret(o) => create(self, namespace, o).await,
            other => self.apply_child(namespace, other).await,
        }
    }

    /// Deletes a child (its dependants in the background); a missing one is fine.
    pub async fn delete_child(&self, namespace: &str, d: &Deletion) -> Result<(), Error> {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        let what = format!("{} {namespace}/{}", d.kind.name(), d.name);
        let res = match d.kind {
            Deletable::Job => Api::<Job>::namespaced(self.client.clone(), namespace)
                .delete(&d.name, &dp)
                .await
                .map(|_| ()),
            Deletable::Pod => Api::<Pod>::namespaced(self.client.clone(), namespace)
                .delete(&d.name, &dp)
                .await
                .map(|_| ()),
        };
        match res {
            Ok(()) => {
                self.count_child_write(d.kind.name());
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(kube_err("deleting", what)(e)),
        }
    }

    /// Pods of a workload, selected by its run labels.
    pub async fn workload_pods(
        &self,
        namespace: &str,
        kind: crate::names::Kind,
        name: &str,
    ) -> Result<Vec<Pod>, Error> {
        Ok(self
            .caches
            .pods_with(namespace, &[(kind.lower(), name), ("role", "run")]))
    }

    /// The base (`spec.model.name`) of Model `namespace/name`, from the cache.
    pub fn base_of(&self, namespace: &str, name: &str) -> Option<String> {
        (self.caches.models)
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
            .and_then(|m| {
                let base = m.references().into_iter().find(|(k, _)| *k == Kind::Model);
                base.map(|(_, name)| name.to_owned())
            })
    }

    /// The state of a referenced Model (`kind` Model) or Dataset.
    pub fn reference(&self, namespace: &str, kind: Kind, name: &str) -> Result<RefState, Error> {
        use kube::runtime::reflector::ObjectRef;
        // Its status and uid: Models and Datasets share one status shape.
        let found = match kind {
            Kind::Dataset => (self.caches.datasets)
                .get(&ObjectRef::new(name).within(namespace))
                .map(|d| d.thaw().map(|d| (d.status, d.metadata.uid))),
            Kind::Model => (self.caches.models)
                .get(&ObjectRef::new(name).within(namespace))
                .map(|m| m.thaw().map(|m| (m.status, m.metadata.uid))),
            Kind::Server | Kind::Notebook => {
                return Err(Error::Invalid(format!(
                    "a {} cannot be referenced",
                    kind.name()
                )));
            }
        };
        let Some(found) = found else {
            return Ok(RefState::NotFound);
        };
        let (status, uid) = found.map_err(|e| {
            Error::Invalid(format!("{} {namespace}/{name} as cached: {e}", kind.name()))
        })?;
        let status = status.unwrap_or_default();
        if !status.ready {
            return Ok(RefState::NotReady);
        }
        let parent = Parent {
            kind,
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.unwrap_or_default(),
            generation: None,
        };
        let prefix = artifact_prefix(&parent, self.cloud.as_ref());
        Ok(RefState::Ready {
            artifacts: prefix.artifacts(),
            generation: completed_generation(&status.conditions),
        })
    }

    /// Publishes an Event when the `Ready` condition changes status or reason. The Event is
    /// sent in the background, so that a reconcile's slot is free as soon as its status is
    /// written.
    pub fn event_on_transition<K>(&self, obj: &K, before: &[Condition], after: &[Condition])
    where
        K: Resource<DynamicType = ()>,
    {
        let old =
            conditions::find(before, types::READY).map(|c| (c.status.as_str(), c.reason.as_str()));
        let Some(new) = conditions::find(after, types::READY) else {
            return;
        };
        // A new status or a new reason is a transition (JobNotComplete -> JobFailed is one).
        if old == Some((new.status.as_str(), new.reason.as_str())) {
            return;
        }
        // A new object starting to wait for its work is not news: no Event for it.
        let waiting = new.status != "True"
            && (new.reason == crate::conditions::reasons::JOB_NOT_COMPLETE
                || new.reason.ends_with("NotReady"));
        if old.is_none() && waiting {
            return;
        }
        let type_ = if new.status == "True"
            || new.reason == crate::conditions::reasons::JOB_NOT_COMPLETE
            || new.reason.ends_with("NotReady")
        {
            events::EventType::Normal
        } else {
            events::EventType::Warning
        };
        self.events
            .publish(obj.object_ref(&()), type_, &new.reason, &new.message);
    }
}

#[cfg(test)]
impl Context {
    /// A context over `api` and `caches`, with the fake cloud: for reconciler tests
    /// without a cluster.
    pub(crate) fn test(api: &super::scripted::ScriptedApi, caches: Caches) -> Context {
        Context::new(
            api.client(),
            Arc::new(crate::fake::FakeCloud::default()),
            Arc::new(Metrics::default()),
            caches,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::scripted::ScriptedApi;
    use super::*;
    use crate::watch::caches::{OwnedHash, StubCaches};
    use http::Method;
    use serde_json::json;
    use substratus_crds::{ArtifactObjectStatus, Model};

    fn parent() -> Parent {
        Parent {
            kind: Kind::Model,
            name: "m".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            generation: Some(1),
        }
    }

    fn writes(ctx: &Context, kind: &str) -> u64 {
        ctx.metrics
            .child_writes
            .get_or_create(&crate::metrics::KindLabels { kind: kind.into() })
            .get()
    }

    fn params_map() -> (ConfigMap, String) {
        let cm = crate::plan::params_config_map(&parent(), &Default::default());
        let hash = hash_of(&cm.metadata).cloned().unwrap();
        (cm, hash)
    }

    #[tokio::test]
    async fn a_child_is_applied_only_when_the_cached_hash_differs() {
        let api = ScriptedApi::default();
        let stub = StubCaches::new();
        let ctx = Context::test(&api, stub.caches.clone());
        let (cm, hash) = params_map();
        let name = cm.metadata.name.clone().unwrap();
        let cached = |hash: Option<&str>| OwnedHash {
            hash: hash.map(Into::into),
            owner: None,
        };
        // Equal hash: no request at all.
        stub.caches
            .configmaps
            .insert(Some("ns"), &name, cached(Some(&hash)));
        ctx.apply_child("ns", &Child::ConfigMap(cm.clone()))
            .await
            .unwrap();
        assert!(api.seen().is_empty(), "{:?}", api.seen());
        assert_eq!(writes(&ctx, "ConfigMap"), 0);
        // Another hash, or one someone else's change cleared: one server-side apply, forced,
        // as the operator's field manager, carrying the new hash.
        for observed in [Some("an older hash"), None] {
            stub.caches
                .configmaps
                .insert(Some("ns"), &name, cached(observed));
            let path = format!("/api/v1/namespaces/ns/configmaps/{name}");
            api.expect(
                Method::PATCH,
                &path,
                200,
                serde_json::to_value(&cm).unwrap(),
            );
            ctx.apply_child("ns", &Child::ConfigMap(cm.clone()))
                .await
                .unwrap();
        }
        api.done();
        let seen = api.seen();
        assert_eq!(seen.len(), 2);
        assert!(
            seen[0].request.contains("fieldManager=substratus-operator"),
            "{seen:?}"
        );
        assert!(seen[0].request.contains("force=true"), "{seen:?}");
        assert_eq!(
            seen[0].body["metadata"]["annotations"][crate::names::SPEC_HASH_ANNOTATION],
            hash.as_str()
        );
        assert_eq!(writes(&ctx, "ConfigMap"), 2);
    }

    #[tokio::test]
    async fn a_child_that_exists_is_not_created_again_and_a_refusal_names_it() {
        let api = ScriptedApi::default();
        let ctx = Context::test(&api, StubCaches::new().caches);
        let job = Child::Job(k8s_openapi::api::batch::v1::Job {
            metadata: parent().child_meta("m-modeller".into()),
            ..Default::default()
        });
        let jobs = "/apis/batch/v1/namespaces/ns/jobs";
        api.refuse(Method::POST, jobs, 409, "AlreadyExists");
        ctx.create_child("ns", &job).await.unwrap();
        assert_eq!(writes(&ctx, "Job"), 0, "a 409 wrote nothing");
        api.refuse(Method::POST, jobs, 403, "Forbidden");
        let err = ctx.create_child("ns", &job).await.unwrap_err().to_string();
        assert!(err.contains("Job ns/m-modeller"), "{err}");
        api.done();
    }

    #[tokio::test]
    async fn deleting_a_child_that_is_gone_is_done() {
        let api = ScriptedApi::default();
        let ctx = Context::test(&api, StubCaches::new().caches);
        let gone = Deletion {
            kind: Deletable::Pod,
            name: "nb-notebook".into(),
        };
        let path = "/api/v1/namespaces/ns/pods/nb-notebook";
        api.refuse(Method::DELETE, path, 404, "NotFound");
        ctx.delete_child("ns", &gone).await.unwrap();
        assert_eq!(writes(&ctx, "Pod"), 0);
        // Dependants go in the background.
        assert_eq!(
            api.seen()[0].body["propagationPolicy"],
            "Background",
            "{:?}",
            api.seen()
        );
        api.refuse(Method::DELETE, path, 500, "InternalError");
        assert!(ctx.delete_child("ns", &gone).await.is_err());
        api.done();
    }

    #[tokio::test]
    async fn status_is_written_only_when_it_changes_and_stands_in_for_older_reads() {
        let api = ScriptedApi::default();
        let ctx = Context::test(&api, StubCaches::new().caches);
        let mut model: Model = serde_json::from_value(json!({
            "apiVersion": "substratus.ai/v1", "kind": "Model",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "resourceVersion": "5"},
            "spec": {"image": "img"},
        }))
        .unwrap();
        let current = ArtifactObjectStatus::default();
        assert!(
            !write_status(&ctx, &model, Some(&current), &current)
                .await
                .unwrap()
        );
        assert!(api.seen().is_empty());
        let ready = ArtifactObjectStatus {
            ready: true,
            ..Default::default()
        };
        let mut written = serde_json::to_value(&model).unwrap();
        written["metadata"]["resourceVersion"] = "7".into();
        let path = "/apis/substratus.ai/v1/namespaces/ns/models/m/status";
        api.expect(Method::PATCH, path, 200, written);
        assert!(
            write_status(&ctx, &model, Some(&current), &ready)
                .await
                .unwrap()
        );
        api.done();
        assert_eq!(api.seen()[0].body["status"]["ready"], true);
        // A read from before the write (resourceVersion 5) sees the written status.
        let fresh = ctx.fresh_status(&model, Some(current.clone()));
        assert_eq!(fresh, Some(ready.clone()));
        model.metadata.resource_version = Some("7".into());
        assert_eq!(
            ctx.fresh_status(&model, Some(current.clone())),
            Some(current)
        );
    }

    #[tokio::test]
    async fn a_service_account_is_applied_once() {
        let api = ScriptedApi::default();
        let ctx = Context::test(&api, StubCaches::new().caches);
        let sa = Role::Modeller.service_account();
        let path = format!("/api/v1/namespaces/ns/serviceaccounts/{sa}");
        // The account created, then the cloud identity bound to it, recorded on it.
        let wanted = ctx
            .cloud
            .service_account_annotations("ns", Role::Modeller)
            .unwrap();
        api.expect(
            Method::POST,
            "/api/v1/namespaces/ns/serviceaccounts",
            201,
            json!({"metadata": {"name": sa, "annotations": wanted}}),
        );
        api.expect(Method::PATCH, &path, 200, json!({"metadata": {"name": sa}}));
        ctx.ensure_service_account("ns", Role::Modeller)
            .await
            .unwrap();
        // Ensured a moment ago: no second request while its watch event is on the way.
        ctx.ensure_service_account("ns", Role::Modeller)
            .await
            .unwrap();
        api.done();
        let seen = api.seen();
        assert_eq!(
            seen[0].body["metadata"]["labels"][MANAGED_BY_LABEL],
            MANAGED_BY
        );
        let principal = ctx.cloud.config().principal.clone().unwrap();
        assert_eq!(
            seen[1].body["metadata"]["annotations"][IDENTITY_BOUND_ANNOTATION],
            principal.as_str()
        );
    }

    #[tokio::test]
    async fn an_account_of_the_role_s_name_made_by_someone_else_is_never_taken_over() {
        let sa = Role::Notebook.service_account();
        let path = format!("/api/v1/namespaces/ns/serviceaccounts/{sa}");
        let meta = |labels: serde_json::Value| {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": sa, "namespace": "ns", "labels": labels}})
        };
        // The create answers 409; the account found carries `labels`.
        let taken = |labels: serde_json::Value| {
            let api = ScriptedApi::default();
            let ctx = Context::test(&api, StubCaches::new().caches);
            api.refuse(
                Method::POST,
                "/api/v1/namespaces/ns/serviceaccounts",
                409,
                "AlreadyExists",
            );
            api.expect(Method::GET, &path, 200, meta(labels));
            (api, ctx)
        };
        // Someone else's: refused, and nothing written to it.
        let (api, ctx) = taken(json!({"team": "a"}));
        let err = ctx
            .ensure_service_account("ns", Role::Notebook)
            .await
            .unwrap_err();
        api.done();
        assert!(
            matches!(err, Error::AccountNotManaged(ref o) if o == &format!("ns/{sa}")),
            "{err}"
        );
        assert!(
            err.to_string().contains("not managed by Substratus"),
            "{err}"
        );
        // The operator's own, not yet in its cache: taken, the cloud's annotations applied.
        let (api, ctx) = taken(json!({MANAGED_BY_LABEL: MANAGED_BY}));
        api.expect(Method::PATCH, &path, 200, json!({"metadata": {"name": sa}}));
        api.expect(Method::PATCH, &path, 200, json!({"metadata": {"name": sa}}));
        ctx.ensure_service_account("ns", Role::Notebook)
            .await
            .unwrap();
        api.done();
    }

    #[test]
    fn a_written_status_stands_in_for_older_reads_until_the_cache_catches_up() {
        let w = WrittenStatus::default();
        w.record("Model/ns/a".into(), 10, json!({"ready": true}));
        // A read from before the write gets the written status, and keeps the entry.
        assert_eq!(
            w.newer_than("Model/ns/a", Some(9)),
            Some(json!({"ready": true}))
        );
        assert_eq!(w.len(), 1);
        // Another object is not affected.
        assert_eq!(w.newer_than("Model/ns/b", Some(1)), None);
        // A read without a version cannot be compared: its own status, entry kept.
        assert_eq!(w.newer_than("Model/ns/a", None), None);
        assert_eq!(w.len(), 1);
        // The read that shows the write: its own status, and the entry is gone for good.
        assert_eq!(w.newer_than("Model/ns/a", Some(10)), None);
        assert_eq!(w.len(), 0);
        assert_eq!(w.newer_than("Model/ns/a", Some(9)), None);
    }

    #[tokio::test]
    async fn references_are_read_from_the_caches_alone() {
        use kube::runtime::watcher::Event;
        let api = ScriptedApi::default();
        let mut stub = StubCaches::new();
        let ctx = Context::test(&api, stub.caches.clone());
        let object = |kind: &str, name: &str, ready: bool| {
            json!({
                "apiVersion": "substratus.ai/v1", "kind": kind,
                "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
                "spec": {"image": "img"},
                "status": {"ready": ready, "conditions": [{"type": "Complete", "status": "True",
                    "reason": "JobComplete", "message": "", "observedGeneration": 4,
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
            })
        };
        let base = serde_json::from_value(object("Model", "base", true)).unwrap();
        stub.models.apply_watcher_event(&Event::Apply(base));
        let data = serde_json::from_value(object("Dataset", "data", false)).unwrap();
        stub.datasets.apply_watcher_event(&Event::Apply(data));
        match ctx.reference("ns", Kind::Model, "base").unwrap() {
            RefState::Ready {
                artifacts,
                generation,
            } => {
                assert_eq!(generation, 4, "the generation whose run completed");
                assert!(
                    artifacts.url.to_string().ends_with("/artifacts"),
                    "{artifacts:?}"
                );
                assert_eq!(
                    (artifacts.kind, artifacts.name.as_str()),
                    (Kind::Model, "base")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ctx.reference("ns", Kind::Dataset, "data").unwrap(),
            RefState::NotReady
        );
        // Same name, another kind or namespace: not found.
        assert_eq!(
            ctx.reference("ns", Kind::Dataset, "base").unwrap(),
            RefState::NotFound
        );
        assert_eq!(
            ctx.reference("other", Kind::Model, "base").unwrap(),
            RefState::NotFound
        );
        // Only Models and Datasets are referenced.
        assert!(ctx.reference("ns", Kind::Server, "base").is_err());
        api.done();
        assert!(api.seen().is_empty(), "{:?}", api.seen());
    }

    #[tokio::test]
    async fn a_service_account_the_cache_shows_as_wanted_is_not_written() {
        use kube::runtime::watcher::Event;
        let api = ScriptedApi::default();
        let mut stub = StubCaches::new();
        let ctx = Context::test(&api, stub.caches.clone());
        let sa = Role::DataLoader.service_account();
        let mut wanted = ctx
            .cloud
            .service_account_annotations("ns", Role::DataLoader)
            .unwrap();
        // Bound already, to this principal.
        let principal = ctx.cloud.config().principal.clone().unwrap();
        wanted.insert(IDENTITY_BOUND_ANNOTATION.into(), principal);
        let cached: kube::api::PartialObjectMeta<ServiceAccount> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": "ns", "annotations": wanted},
        }))
        .unwrap();
        stub.service_accounts
            .apply_watcher_event(&Event::Apply(cached));
        ctx.ensure_service_account("ns", Role::DataLoader)
            .await
            .unwrap();
        api.done();
        assert!(api.seen().is_empty(), "{:?}", api.seen());
    }
}
