//! Watch-fed caches of what the reconcilers read, so that a reconcile reads from memory
//! instead of the API server. Only the operator's own children are watched (the managed-by
//! label); objects compared only by their spec hash are kept as key and hash
//! ([`super::index`]); Jobs, Deployments and Pods as metadata and status, with what the
//! reconcilers never read dropped ([`super::slim`]) to keep memory small.
//! Secrets are not cached: watching them would need the right to list every Secret.

use std::future::Future;
use std::pin::Pin;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, PodStatus, Service, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use substratus_crds::{Dataset, Model};

use super::index::{self, Index};
use super::janitor::Volume;
use super::slim::{self, JobSummary, Labels, StatusOnly};
use crate::names::{Kind, MANAGED_BY, MANAGED_BY_LABEL};

/// A Job as cached: metadata and status.
pub type CachedJob = StatusOnly<Job, JobStatus>;
/// A Deployment as cached: metadata and status.
pub type CachedDeployment = StatusOnly<Deployment, DeploymentStatus>;
/// A Pod as cached: metadata and status.
pub type CachedPod = StatusOnly<Pod, PodStatus>;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Streams of cached objects, each delivered after the cache applied it, that trigger the
/// controllers: a reconcile triggered by a change always reads that change from the cache.
pub struct Triggers {
    /// The Model and Dataset controllers' own triggers: their objects come from the shared
    /// caches, which hold each Model and Dataset once.
    pub models: ReflectHandle<Model>,
    pub datasets: ReflectHandle<Dataset>,
    /// The objects whose Jobs changed (a Job is told to its controlling object only).
    pub jobs_for_models: Owners,
    pub jobs_for_datasets: Owners,
    /// Build Jobs of Servers and Notebooks.
    pub jobs_for_servers: Owners,
    pub jobs_for_notebooks: Owners,
    /// The objects whose params ConfigMap was deleted or changed by someone else.
    pub configmaps_for_models: Owners,
    pub configmaps_for_datasets: Owners,
    pub configmaps_for_servers: Owners,
    pub configmaps_for_notebooks: Owners,
    pub deployments_for_servers: ReflectHandle<CachedDeployment>,
    /// Pods, routed by their workload label: a pod that waits or fails explains its
    /// object's status (Jobs' and Deployments' pods are not owned by the object itself).
    pub pods_for_models: ReflectHandle<CachedPod>,
    pub pods_for_datasets: ReflectHandle<CachedPod>,
    pub pods_for_servers: ReflectHandle<CachedPod>,
    pub pods_for_notebooks: ReflectHandle<CachedPod>,
    pub models_for_models: ReflectHandle<Model>,
    pub models_for_servers: ReflectHandle<Model>,
    pub models_for_notebooks: ReflectHandle<Model>,
    pub datasets_for_models: ReflectHandle<Dataset>,
    pub datasets_for_notebooks: ReflectHandle<Dataset>,
    pub deleted_models_for_models: Deletions<Model>,
    pub deleted_models_for_servers: Deletions<Model>,
    pub deleted_models_for_notebooks: Deletions<Model>,
    pub deleted_datasets_for_models: Deletions<Dataset>,
    pub deleted_datasets_for_notebooks: Deletions<Dataset>,
    /// Role ServiceAccounts deleted by someone else (or with their namespace).
    pub deleted_accounts: Deletions<PartialObjectMeta<ServiceAccount>>,
}

/// The caches; [`Caches::new`] also returns the tasks that keep them fed.
#[derive(Clone)]
pub struct Caches {
    /// Jobs as the little a reconcile reads of them.
    jobs: Index<JobSummary>,
    deployments: Store<CachedDeployment>,
    pods: Store<CachedPod>,
    pub models: Store<Model>,
    pub datasets: Store<Dataset>,
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

/// The spec hash of a child as applied by the operator: none once someone else changed it.
fn applied_hash(m: &ObjectMeta) -> Option<Box<str>> {
    if slim::drifted(m, super::FIELD_MANAGER) {
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
            let i = Kind::ALL.iter().position(|k| k == kind).unwrap_or(0);
            let _ = senders[i].unbounded_send((namespace.into(), name.clone()));
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

/// Like [`shared`], and also forwards every deletion to `d` receivers.
fn shared_with_deletions<K>(
    api: Api<K>,
    strip: fn(&mut K),
    n: usize,
    d: usize,
    tasks: &mut Vec<Task>,
) -> (Store<K>, Vec<ReflectHandle<K>>, Vec<Deletions<K>>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store_shared(1024);
    let subscribers = (0..n).filter_map(|_| writer.subscribe()).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..d).map(|_| futures::channel::mpsc::unbounded()).unzip();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip);
    tasks.push(Box::pin(reflector::reflector(writer, stream).for_each(
        move |event| {
            if let Ok(watcher::Event::Delete(obj)) = &event {
                for tx in &senders {
                    let _ = tx.unbounded_send(obj.clone());
                }
            }
            futures::future::ready(())
        },
    )));
    (store, subscribers, receivers)
}

/// A cache whose changes are also delivered to `n` subscribers.
fn shared<K>(
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
    n: usize,
    tasks: &mut Vec<Task>,
) -> (Store<K>, Vec<ReflectHandle<K>>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store_shared(1024);
    let subscribers = (0..n).filter_map(|_| writer.subscribe()).collect();
    let stream = watcher(api, config).default_backoff().modify(strip);
    tasks.push(Box::pin(
        reflector::reflector(writer, stream).for_each(|_| futures::future::ready(())),
    ));
    (store, subscribers)
}

/// A metadata cache; deleted objects are also sent to the returned receiver.
fn meta<K>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
    strip: fn(&mut ObjectMeta),
    tasks: &mut Vec<Task>,
) -> (Store<PartialObjectMeta<K>>, Deletions<PartialObjectMeta<K>>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |o: &mut PartialObjectMeta<K>| strip(&mut o.metadata));
    tasks.push(Box::pin(reflector::reflector(writer, stream).for_each(
        move |event| {
            if let Ok(watcher::Event::Delete(obj)) = event {
                let _ = tx.unbounded_send(obj);
            }
            futures::future::ready(())
        },
    )));
    (store, rx)
}

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

/// One subscriber of a shared cache; `subscribe` on a shared writer always yields one.
fn take<T>(subscribers: &mut Vec<T>) -> T {
    subscribers
        .pop()
        .expect("shared caches hand out one subscriber per trigger")
}

impl Caches {
    /// Caches scoped to `namespace` (all when `None`), their triggers, and the tasks that
    /// feed them.
    pub fn new(client: &Client, namespace: Option<&str>) -> (Caches, Triggers, Vec<Task>) {
        let mut tasks = Vec::new();
        let (notify, [job_models, job_datasets, job_servers, job_notebooks]) =
            route_to_owners(|j: &JobSummary| j.owner.as_ref(), job_news);
        let (jobs, task) = index::index(
            namespaced::<CachedJob>(client, namespace),
            managed(),
            JobSummary::of,
            notify,
        );
        tasks.push(task);
        let (cm_notify, [cm_models, cm_datasets, cm_servers, cm_notebooks]) =
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
        let (deployments, mut deployment_subs) = shared(
            namespaced::<CachedDeployment>(client, namespace),
            managed(),
            |d| {
                slim::forget_hash_if_drifted(&mut d.metadata, super::FIELD_MANAGER);
                slim::child_meta(&mut d.metadata, Labels::Drop)
            },
            1,
            &mut tasks,
        );
        let (pods, mut pod_subs) = shared(
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
            4,
            &mut tasks,
        );
        let (models, mut model_subs, mut model_dels) = shared_with_deletions(
            namespaced::<Model>(client, namespace),
            |m| slim::primary_meta(m.meta_mut()),
            4,
            3,
            &mut tasks,
        );
        let (datasets, mut dataset_subs, mut dataset_dels) = shared_with_deletions(
            namespaced::<Dataset>(client, namespace),
            |d| slim::primary_meta(d.meta_mut()),
            3,
            2,
            &mut tasks,
        );
        let (service_accounts, deleted_accounts) = meta(
            namespaced::<PartialObjectMeta<ServiceAccount>>(client, namespace),
            managed(),
            // Their annotations carry the cloud identity: kept.
            slim::primary_meta,
            &mut tasks,
        );
        let caches = Caches {
            jobs,
            deployments,
            pods,
            models,
            datasets,
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
            service_accounts,
        };
        let triggers = Triggers {
            models: take(&mut model_subs),
            datasets: take(&mut dataset_subs),
            jobs_for_models: job_models,
            jobs_for_datasets: job_datasets,
            jobs_for_servers: job_servers,
            jobs_for_notebooks: job_notebooks,
            configmaps_for_models: cm_models,
            configmaps_for_datasets: cm_datasets,
            configmaps_for_servers: cm_servers,
            configmaps_for_notebooks: cm_notebooks,
            deployments_for_servers: take(&mut deployment_subs),
            pods_for_models: take(&mut pod_subs),
            pods_for_datasets: take(&mut pod_subs),
            pods_for_servers: take(&mut pod_subs),
            pods_for_notebooks: take(&mut pod_subs),
            models_for_models: take(&mut model_subs),
            models_for_servers: take(&mut model_subs),
            models_for_notebooks: take(&mut model_subs),
            datasets_for_models: take(&mut dataset_subs),
            datasets_for_notebooks: take(&mut dataset_subs),
            deleted_models_for_models: take(&mut model_dels),
            deleted_models_for_servers: take(&mut model_dels),
            deleted_models_for_notebooks: take(&mut model_dels),
            deleted_datasets_for_models: take(&mut dataset_dels),
            deleted_datasets_for_notebooks: take(&mut dataset_dels),
            deleted_accounts,
        };
        (caches, triggers, tasks)
    }

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
                .map(|o| super::hash_of(o.meta()).cloned())
        }
        match kind {
            "ConfigMap" => self
                .configmaps
                .get(Some(namespace), name)
                .map(|c| into_string(c.hash)),
            "Service" => self.services.get(Some(namespace), name).map(into_string),
            "Deployment" => hash(&self.deployments, namespace, name),
            "Job" => self.jobs.get(Some(namespace), name).map(|j| {
                j.annotation(crate::plan::SPEC_HASH_ANNOTATION)
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
