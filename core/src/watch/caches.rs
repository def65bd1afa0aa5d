//! Watch-fed caches of what the reconcilers read, so that a reconcile reads from memory
//! instead of the API server. Only the operator's own children are watched (the managed-by
//! label); objects compared only by their spec hash are kept as key and hash
//! ([`super::index`]); Jobs, Deployments and Pods as metadata and status, with what the
//! reconcilers never read dropped ([`super::slim`]) to keep memory small.
//! Secrets are not cached: watching them would need the right to list every Secret.
//!
//! [`Watches`] makes the caches and hands out their change streams to whoever asks, before
//! [`Watches::start`] turns them on; [`Caches`] is the read side.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, PodStatus, Service, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use substratus_crds::{Dataset, Model};

use super::frozen::{Frozen, Wired};
use super::index::{self, Index};
use super::slim::{self, JobSummary, Labels, StatusOnly};
use crate::names::{
    CLAIM_LABEL, CLAIM_NAMESPACE_LABEL, FIELD_MANAGER, Kind, MANAGED_BY, MANAGED_BY_LABEL,
};

/// A Job as cached: metadata and status.
pub type CachedJob = StatusOnly<Job, JobStatus>;
/// A Deployment as cached: metadata and status.
pub type CachedDeployment = StatusOnly<Deployment, DeploymentStatus>;
/// A Pod as cached: metadata and status.
pub type CachedPod = StatusOnly<Pod, PodStatus>;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The caches, as the reconcilers read them; [`Watches`] feeds them.
#[derive(Clone)]
pub struct Caches {
    /// Jobs as the little a reconcile reads of them.
    jobs: Index<JobSummary>,
    deployments: Store<CachedDeployment>,
    pods: Store<CachedPod>,
    pub models: Store<Frozen<Model>>,
    pub datasets: Store<Frozen<Dataset>>,
    /// Children compared only by their spec hash: kept as key and hash.
    /// Params ConfigMaps: hash and owner (a deleted or edited one is news to its owner).
    pub configmaps: Index<OwnedHash>,
    pub services: Index<Option<Box<str>>>,
    pub claims: Index<Option<Box<str>>>,
    /// Static volumes: hash and claim (for the janitor).
    pub volumes: Index<Volume>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
}

/// A child as the spec hash it was applied from and the Substratus object that owns it.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedHash {
    /// `None` when the child carries no hash or someone else changed it since (see
    /// [`slim::drifted`]): either way it is applied again.
    pub hash: Option<Box<str>>,
    pub owner: Option<slim::Owner>,
}

/// What the caches keep of a static volume: its spec hash and the claim it was made for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Volume {
    pub hash: Option<Box<str>>,
    /// The claim's namespace and name, from the claim labels.
    pub claim: Option<(Box<str>, Box<str>)>,
}

impl Volume {
    pub fn of(m: &ObjectMeta) -> Volume {
        let labels = m.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(|v| v.as_str().into());
        Volume {
            hash: index::spec_hash(m),
            claim: label(CLAIM_NAMESPACE_LABEL).zip(label(CLAIM_LABEL)),
        }
    }
}

/// The spec hash of a child as applied by the operator: none once someone else changed it.
fn applied_hash(m: &ObjectMeta) -> Option<Box<str>> {
    if slim::drifted(m, FIELD_MANAGER) {
        None
    } else {
        index::spec_hash(m)
    }
}

/// Whether a change of a child its owner only compares by hash is news to the owner: the
/// child is gone, or someone else changed it (the operator's own applies keep a hash).
fn lost_or_drifted(change: &index::Change<'_, OwnedHash>) -> bool {
    match change {
        index::Change::Added(_) => false,
        index::Change::Updated { old, new } => new.hash.is_none() && old.hash.is_some(),
        index::Change::Removed(_) => true,
    }
}

/// The pods the caches keep.
pub const PODS_NOT_SUCCEEDED: &str = "status.phase!=Succeeded";

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
}

fn namespaced<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Namespace and name of objects whose children changed, told after the cache applied the
/// change.
pub type Owners = futures::channel::mpsc::UnboundedReceiver<(Box<str>, Box<str>)>;

/// A notification per child change that `worth` keeps, sent to the channel of the child's
/// controlling object's kind.
fn route_to_owners<E: 'static>(
    owner: fn(&E) -> Option<&slim::Owner>,
    worth: fn(&index::Change<'_, E>) -> bool,
) -> (index::Notify<E>, [Owners; 4]) {
    let channels: [_; 4] = std::array::from_fn(|_| futures::channel::mpsc::unbounded());
    let senders = channels.each_ref().map(|(tx, _)| tx.clone());
    let notify: index::Notify<E> = Box::new(move |key, change| {
        if !worth(&change) {
            return;
        }
        if let Some((kind, name)) = owner(change.entry()) {
            let namespace = key.split_once('/').map_or("", |(ns, _)| ns);
            let _ = senders[kind_index(*kind)].unbounded_send((namespace.into(), name.clone()));
        }
    });
    (notify, channels.map(|(_, rx)| rx))
}

/// Whether a Job's change can change its owner's status: a new state (a condition, a
/// deletion) or its removal. A Job that appears without a state is one a reconcile just
/// created (or, after a relist, one whose owner is reconciled at start anyway), and most of
/// a Job's status writes (active, ready, uncounted pods) leave its summary as it was.
fn job_news(change: &index::Change<'_, JobSummary>) -> bool {
    match change {
        index::Change::Added(job) => !job.is_blank(),
        index::Change::Updated { old, new } => old != new,
        index::Change::Removed(_) => true,
    }
}

/// Deleted objects, delivered after the cache dropped them (the shared streams carry only
/// applied objects).
pub type Deletions<K> = futures::channel::mpsc::UnboundedReceiver<K>;

fn pod(p: &CachedPod) -> Pod {
    Pod {
        metadata: p.metadata.clone(),
        status: p.status.clone(),
        ..Default::default()
    }
}

/// An index of the operator's children listed by `api`, summarized from their metadata.
fn indexed<K, E>(
    api: Api<PartialObjectMeta<K>>,
    summarize: fn(&PartialObjectMeta<K>) -> E,
    tasks: &mut Vec<Task>,
) -> Index<E>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    let (idx, task) = index::index(api, managed(), summarize, index::quiet());
    tasks.push(task);
    idx
}

fn into_string(hash: Option<Box<str>>) -> Option<String> {
    hash.map(String::from)
}

/// One watched kind held whole in a store, its changes handed to whoever subscribed before
/// it started.
pub struct Feed<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: Writer<K>,
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
    deleted: Vec<futures::channel::mpsc::UnboundedSender<K>>,
    observers: Vec<Observer<K>>,
}

/// Told of every watch event of a [`Feed`], before its store applies it.
type Observer<K> = Box<dyn Fn(&watcher::Event<K>) + Send>;

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn new(api: Api<K>, config: watcher::Config, strip: fn(&mut K)) -> Feed<K> {
        Feed {
            writer: reflector::store_shared(1024).1,
            api,
            config,
            strip,
            deleted: Vec::new(),
            observers: Vec::new(),
        }
    }

    /// Tells `f` of every watch event, before the store applies it (so before any
    /// controller can read the object there).
    pub fn observe(&mut self, f: impl Fn(&watcher::Event<K>) + Send + 'static) {
        self.observers.push(Box::new(f));
    }

    fn store(&self) -> Store<K> {
        self.writer.as_reader()
    }

    /// Every object the store applied, delivered after it did (and every object once its
    /// first list is in).
    pub fn applied(&mut self) -> impl Stream<Item = Arc<K>> + Send + 'static + use<K> {
        // A shared writer always hands out a subscriber; without one the stream is empty.
        futures::stream::iter(self.writer.subscribe()).flatten()
    }

    /// Every object deleted, delivered after the store dropped it.
    pub fn deleted(&mut self) -> Deletions<K> {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        self.deleted.push(tx);
        rx
    }

    fn start(self) -> Task {
        let Feed {
            writer,
            api,
            config,
            strip,
            deleted,
            observers,
        } = self;
        let stream = watcher(api, config)
            .default_backoff()
            .modify(strip)
            .inspect(move |event| {
                if let Ok(event) = event {
                    observers.iter().for_each(|f| f(event));
                }
            });
        Box::pin(reflector::reflector(writer, stream).for_each(move |event| {
            if let Ok(watcher::Event::Delete(obj)) = &event {
                for tx in &deleted {
                    let _ = tx.unbounded_send(obj.clone());
                }
            }
            futures::future::ready(())
        }))
    }
}

/// The caches before they run: each trigger a controller needs is asked for here, as many
/// as wanted, and [`Watches::start`] then returns the tasks that feed them all.
pub struct Watches {
    caches: Caches,
    models: Feed<Frozen<Model>>,
    datasets: Feed<Frozen<Dataset>>,
    deployments: Feed<CachedDeployment>,
    pods: Feed<CachedPod>,
    service_accounts: Feed<PartialObjectMeta<ServiceAccount>>,
    /// Per kind (in [`Kind::ALL`] order), the objects whose Jobs changed; taken on demand.
    jobs_of: [Option<Owners>; 4],
    /// Per kind, the objects whose params ConfigMap was deleted or changed by someone else.
    configmaps_of: [Option<Owners>; 4],
    tasks: Vec<Task>,
}

/// The caches that hold every object of a kind (frozen), not a summary: Models and Datasets
/// (read by their own controllers and by the objects that refer to them).
pub trait Shared: Wired {
    /// This kind's cache among `watches`.
    fn feed(watches: &mut Watches) -> &mut Feed<Frozen<Self>>;
}

impl Shared for Model {
    fn feed(watches: &mut Watches) -> &mut Feed<Frozen<Self>> {
        &mut watches.models
    }
}

impl Shared for Dataset {
    fn feed(watches: &mut Watches) -> &mut Feed<Frozen<Self>> {
        &mut watches.datasets
    }
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Watches {
    /// The caches scoped to `namespace` (all when `None`), not yet fed.
    pub fn new(client: &Client, namespace: Option<&str>) -> Watches {
        let mut tasks = Vec::new();
        let (notify, jobs_of) = route_to_owners(|j: &JobSummary| j.owner.as_ref(), job_news);
        let (jobs, task) = index::index(
            namespaced::<CachedJob>(client, namespace),
            managed(),
            JobSummary::of,
            notify,
        );
        tasks.push(task);
        let (cm_notify, configmaps_of) =
            route_to_owners(|c: &OwnedHash| c.owner.as_ref(), lost_or_drifted);
        let (configmaps, task) = index::index(
            namespaced::<PartialObjectMeta<ConfigMap>>(client, namespace),
            managed(),
            |o| OwnedHash {
                hash: applied_hash(&o.metadata),
                owner: slim::controller_of(&o.metadata),
            },
            cm_notify,
        );
        tasks.push(task);
        let deployments = Feed::new(
            namespaced::<CachedDeployment>(client, namespace),
            managed(),
            |d| {
                slim::forget_hash_if_drifted(&mut d.metadata, FIELD_MANAGER);
                slim::child_meta(&mut d.metadata, Labels::Drop)
            },
        );
        let pods = Feed::new(
            namespaced::<CachedPod>(client, namespace),
            // A pod that succeeded explains nothing (pods are read to say why a workload
            // waits or failed, and notebook and server pods restart, never succeed): it
            // leaves the cache, so finished Jobs cost no memory for their pods.
            managed().fields(PODS_NOT_SUCCEEDED),
            |p| {
                slim::child_meta(&mut p.metadata, Labels::Keep);
                if let Some(s) = p.status.as_mut() {
                    slim::pod_status(s);
                }
            },
        );
        let models = Feed::new(
            namespaced::<Frozen<Model>>(client, namespace),
            watcher::Config::default(),
            |m| slim::primary_meta(m.meta_mut()),
        );
        let datasets = Feed::new(
            namespaced::<Frozen<Dataset>>(client, namespace),
            watcher::Config::default(),
            |d| slim::primary_meta(d.meta_mut()),
        );
        let service_accounts = Feed::new(
            namespaced::<PartialObjectMeta<ServiceAccount>>(client, namespace),
            managed(),
            // Their annotations carry the cloud identity: kept.
            |o| slim::primary_meta(&mut o.metadata),
        );
        let caches = Caches {
            jobs,
            deployments: deployments.store(),
            pods: pods.store(),
            models: models.store(),
            datasets: datasets.store(),
            configmaps,
            services: indexed(
                namespaced::<PartialObjectMeta<Service>>(client, namespace),
                |o| applied_hash(&o.metadata),
                &mut tasks,
            ),
            claims: indexed(
                namespaced::<PartialObjectMeta<PersistentVolumeClaim>>(client, namespace),
                |o| index::spec_hash(&o.metadata),
                &mut tasks,
            ),
            volumes: indexed(
                Api::<PartialObjectMeta<PersistentVolume>>::all(client.clone()),
                |o| Volume::of(&o.metadata),
                &mut tasks,
            ),
            service_accounts: service_accounts.store(),
        };
        Watches {
            caches,
            models,
            datasets,
            deployments,
            pods,
            service_accounts,
            jobs_of: jobs_of.map(Some),
            configmaps_of: configmaps_of.map(Some),
            tasks,
        }
    }

    /// The read side, for the reconcilers.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// The cache of a shared kind (Models, Datasets).
    pub fn of<K: Shared>(&mut self) -> &mut Feed<Frozen<K>> {
        K::feed(self)
    }

    /// Deployments applied.
    pub fn deployments(
        &mut self,
    ) -> impl Stream<Item = Arc<CachedDeployment>> + Send + 'static + use<> {
        self.deployments.applied()
    }

    /// Pods applied (those not succeeded).
    pub fn pods(&mut self) -> impl Stream<Item = Arc<CachedPod>> + Send + 'static + use<> {
        self.pods.applied()
    }

    /// Role ServiceAccounts deleted by someone else (or with their namespace).
    pub fn deleted_accounts(&mut self) -> Deletions<PartialObjectMeta<ServiceAccount>> {
        self.service_accounts.deleted()
    }

    /// The objects of `kind` whose Jobs changed in a way their status shows (a Job is told
    /// to its controlling object only). One stream per kind: a second ask gets an empty one.
    pub fn job_changes(
        &mut self,
        kind: Kind,
    ) -> impl Stream<Item = (Box<str>, Box<str>)> + Send + 'static + use<> {
        futures::stream::iter(self.jobs_of[kind_index(kind)].take()).flatten()
    }

    /// The objects of `kind` whose params ConfigMap was deleted or changed by someone else.
    /// One stream per kind, as [`Watches::job_changes`].
    pub fn configmap_changes(
        &mut self,
        kind: Kind,
    ) -> impl Stream<Item = (Box<str>, Box<str>)> + Send + 'static + use<> {
        futures::stream::iter(self.configmaps_of[kind_index(kind)].take()).flatten()
    }

    /// The tasks that feed every cache and trigger; the triggers not asked for by now are
    /// never fed.
    pub fn start(self) -> Vec<Task> {
        let mut tasks = self.tasks;
        tasks.push(self.models.start());
        tasks.push(self.datasets.start());
        tasks.push(self.deployments.start());
        tasks.push(self.pods.start());
        tasks.push(self.service_accounts.start());
        tasks
    }
}

/// Caches no watch feeds, for reconciler tests: the stores' writers fill them by hand.
#[cfg(test)]
pub(crate) struct StubCaches {
    pub caches: Caches,
    pub models: Writer<Frozen<Model>>,
    pub datasets: Writer<Frozen<Dataset>>,
    pub service_accounts: Writer<PartialObjectMeta<ServiceAccount>>,
}

#[cfg(test)]
impl StubCaches {
    pub(crate) fn new() -> StubCaches {
        let models = Writer::default();
        let datasets = Writer::default();
        let service_accounts = Writer::default();
        let caches = Caches {
            jobs: Index::new(),
            deployments: Writer::default().as_reader(),
            pods: Writer::default().as_reader(),
            models: models.as_reader(),
            datasets: datasets.as_reader(),
            configmaps: Index::new(),
            services: Index::new(),
            claims: Index::new(),
            volumes: Index::new(),
            service_accounts: service_accounts.as_reader(),
        };
        StubCaches {
            caches,
            models,
            datasets,
            service_accounts,
        }
    }
}

impl Caches {
    /// How many objects each cache holds, by kind.
    pub fn sizes(&self) -> [(&'static str, usize); 10] {
        [
            ("Job", self.jobs.len()),
            ("Deployment", self.deployments.state().len()),
            ("Pod", self.pods.state().len()),
            ("Model", self.models.state().len()),
            ("Dataset", self.datasets.state().len()),
            ("ConfigMap", self.configmaps.len()),
            ("Service", self.services.len()),
            ("PersistentVolumeClaim", self.claims.len()),
            ("PersistentVolume", self.volumes.len()),
            ("ServiceAccount", self.service_accounts.state().len()),
        ]
    }

    /// Completes once every cache has its first full list.
    pub async fn wait_until_ready(&self) {
        let _ = futures::join!(
            self.jobs.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.models.wait_until_ready(),
            self.datasets.wait_until_ready(),
            self.configmaps.wait_until_ready(),
            self.services.wait_until_ready(),
            self.claims.wait_until_ready(),
            self.volumes.wait_until_ready(),
            self.service_accounts.wait_until_ready(),
        );
    }

    /// The spec-hash annotation of a cached child, `Some(None)` when it exists without one,
    /// `None` when this kind is not cached or the object is not known.
    pub fn child_hash(&self, kind: &str, namespace: &str, name: &str) -> Option<Option<String>> {
        fn hash<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Option<String>>
        where
            K: Resource<DynamicType = ()> + Clone,
        {
            store
                .get(&ObjectRef::new(name).within(namespace))
                .map(|o| index::spec_hash(o.meta()).map(String::from))
        }
        match kind {
            "ConfigMap" => self
                .configmaps
                .get(Some(namespace), name)
                .map(|c| into_string(c.hash)),
            "Service" => self.services.get(Some(namespace), name).map(into_string),
            "Deployment" => hash(&self.deployments, namespace, name),
            "Job" => self.jobs.get(Some(namespace), name).map(|j| {
                j.annotation(crate::names::SPEC_HASH_ANNOTATION)
                    .map(String::from)
            }),
            "Pod" => hash(&self.pods, namespace, name),
            "PersistentVolumeClaim" => self.claims.get(Some(namespace), name).map(into_string),
            "PersistentVolume" => self.volumes.get(None, name).map(|v| into_string(v.hash)),
            _ => None,
        }
    }

    /// Pods of the operator whose labels include all of `labels`.
    pub fn pods_with(&self, namespace: &str, labels: &[(&str, &str)]) -> Vec<Pod> {
        self.pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter(|p| {
                labels
                    .iter()
                    .all(|(k, v)| p.labels().get(*k).map(String::as_str) == Some(*v))
            })
            .map(|p| pod(p))
            .collect()
    }

    /// A cached Job, as the reconcilers read it: our annotations, deletion, conditions.
    pub fn job(&self, namespace: &str, name: &str) -> Option<Job> {
        self.jobs
            .get(Some(namespace), name)
            .map(|j| j.to_job(namespace, name))
    }

    /// A cached Deployment, with its metadata and status (no spec).
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.deployments
            .get(&ObjectRef::new(name).within(namespace))
            .map(|d| Deployment {
                metadata: d.metadata.clone(),
                status: d.status.clone(),
                ..Default::default()
            })
    }

    /// A cached Pod, with its metadata and status (no spec).
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods
            .get(&ObjectRef::new(name).within(namespace))
            .map(|p| pod(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use index::Change;

    fn summary(status: serde_json::Value, deleting: bool) -> JobSummary {
        let mut meta = serde_json::json!({
            "name": "m-modeller", "namespace": "ns",
            "ownerReferences": [{"apiVersion": "substratus.ai/v1", "kind": "Model", "name": "m",
                "uid": "u", "controller": true}],
        });
        if deleting {
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        let job: CachedJob =
            serde_json::from_value(serde_json::json!({"metadata": meta, "status": status}))
                .unwrap();
        JobSummary::of(&job)
    }

    #[test]
    fn a_job_is_news_to_its_owner_when_its_state_changes_not_when_it_appears_blank() {
        let created = summary(serde_json::json!({}), false);
        let running = summary(serde_json::json!({"active": 1, "ready": 1}), false);
        let complete = summary(
            serde_json::json!({"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}]}),
            false,
        );
        let deleting = summary(serde_json::json!({"active": 1}), true);
        assert!(!job_news(&Change::Added(&created)));
        // Counts are not kept: a Job that starts running says nothing new.
        assert!(!job_news(&Change::Updated {
            old: &created,
            new: &running
        }));
        assert!(job_news(&Change::Updated {
            old: &running,
            new: &complete
        }));
        assert!(job_news(&Change::Updated {
            old: &running,
            new: &deleting
        }));
        assert!(job_news(&Change::Removed(&running)));
        // Found with a state (a relist after a restart, a watch that was down).
        assert!(job_news(&Change::Added(&complete)));
        assert!(job_news(&Change::Added(&deleting)));
    }

    #[tokio::test]
    async fn job_news_reaches_the_owners_kind_only() {
        let (notify, [mut models, mut datasets, _, _]) =
            route_to_owners(|j: &JobSummary| j.owner.as_ref(), job_news);
        let complete = summary(
            serde_json::json!({"conditions": [{"type": "Complete", "status": "True"}]}),
            false,
        );
        let created = summary(serde_json::json!({}), false);
        notify("ns/m-modeller", Change::Added(&created));
        notify("ns/m-modeller", Change::Added(&complete));
        let got = models.next().await;
        assert_eq!(got, Some(("ns".into(), "m".into())));
        assert!(models.try_recv().is_err(), "the blank Job was told");
        assert!(datasets.try_recv().is_err());
    }
}
