//! Wiring: which watch triggers which reconcile. Two kube-runtime Controllers per kind over
//! one store (see `children_lane`): the main lane takes the object's own changes, the resync
//! and the changes of the Models and Datasets it refers to (so that a reference becoming
//! Ready re-triggers its dependants); the children lane takes its children's news.
//!
//! | kind     | refers to (re-triggered by)  | children lane                                  |
//! |----------|------------------------------|------------------------------------------------|
//! | Model    | base Model, Dataset          | Jobs, params ConfigMap, pods by label          |
//! | Dataset  | —                            | Jobs, params ConfigMap, pods by label          |
//! | Server   | Model                        | Jobs, ConfigMap, Deployment, pods by label     |
//! | Notebook | Model, Dataset               | Jobs, ConfigMap, its Pod (owned)               |
//!
//! Servers also own their Service (main lane). The table is [`Wired::REFERS`] and the
//! calls in [`run`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use substratus_crds::{Dataset, Model, Notebook, Server};
use tokio::task::JoinSet;

use crate::metrics::{ErrorLabels, KindLabels, ResultLabels};
use crate::names::{Kind, MANAGED_BY, MANAGED_BY_LABEL};
use crate::reconcile::{Context, Error, failure, reconcile_dataset, reconcile_model};
use crate::reconcile::{reconcile_notebook, reconcile_server, status_key};
use crate::watch::caches::{CachedPod, Shared};
use crate::watch::exclusive::Exclusive;
use crate::watch::frozen::{Frozen, Wired};
use crate::watch::referrers::Referrers;
use crate::watch::{Watches, slim};

/// Tuning of the controllers.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Reconciles running at once, per kind.
    pub concurrency: u16,
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// How often Released static volumes of deleted objects are deleted.
    pub sweep_every: Duration,
    /// Each object is reconciled again within this long even if nothing changed: a safety
    /// net, spread evenly over the period.
    pub resync_every: Duration,
    /// A reconcile still running after this long fails (and releases its object): a hung
    /// call to the API server or a cloud never holds an object forever.
    pub deadline: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            concurrency: 8,
            namespace: None,
            sweep_every: Duration::from_secs(60),
            resync_every: Duration::from_secs(600),
            deadline: Duration::from_secs(300),
        }
    }
}

fn api<K>(ctx: &Context, opts: &ControllerOptions) -> Api<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &opts.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
}

/// Objects of `K` in the namespace of `referenced` (an object of `kind`) that name it.
fn dependants<K: Wired, R: Resource>(
    referrers: &Referrers<Frozen<K>>,
    kind: Kind,
    referenced: &R,
) -> Vec<ObjectRef<Frozen<K>>> {
    let meta = referenced.meta();
    let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    referrers
        .of(kind, namespace, name)
        .iter()
        .map(|n| ObjectRef::new(n).within(namespace))
        .collect()
}

/// `controller` re-triggered by every change (applied or deleted) of a referenced `R`.
fn follow<K: Wired, R: Shared + Wired>(
    controller: Controller<Frozen<K>>,
    referrers: &Referrers<Frozen<K>>,
    watches: &mut Watches,
) -> Controller<Frozen<K>> {
    let (applied, deleted) = (referrers.clone(), referrers.clone());
    let feed = watches.of::<R>();
    controller
        .watches_shared_stream(feed.applied(), move |r: Arc<Frozen<R>>| {
            dependants(&applied, R::KIND, r.as_ref())
        })
        .watches_stream(feed.deleted().map(Ok), move |r: Frozen<R>| {
            dependants(&deleted, R::KIND, &r)
        })
}

/// References to the objects whose children changed.
fn owners<K>(
    changed: impl Stream<Item = (Box<str>, Box<str>)> + Send + 'static,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    changed.map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
}

/// The object a pod works for, read from its workload label (`model: <name>`, ...), when
/// the pod can explain that object's status: a pod that waits (unschedulable, image pull,
/// a container that cannot start or keeps failing) or failed. A pod that runs or succeeded
/// says nothing its Job or Deployment does not say in its own status, which triggers the
/// object anyway; reconciling for it too only keeps the object busy when its Job completes.
/// The exception is an object whose status shows a problem read from its pods
/// (`shows_pod_problem`): a pod that runs now ends that problem, and nothing else would
/// tell (a Job's ready count is not news).
fn labelled<K: Wired>(
    store: Store<Frozen<K>>,
) -> impl Fn(Arc<CachedPod>) -> Option<ObjectRef<Frozen<K>>> {
    move |p| {
        let name = p.labels().get(K::KIND.lower())?;
        let object = ObjectRef::new(name).within(p.metadata.namespace.as_deref()?);
        if may_explain(&p) || store.get(&object).is_some_and(|o| o.pod_problem_shown()) {
            Some(object)
        } else {
            None
        }
    }
}

/// Whether a pod's state can show in its object's status: Pending or Failed (or not known
/// yet), or a container waiting for a reason other than starting up.
fn may_explain(p: &CachedPod) -> bool {
    let Some(status) = p.status.as_ref() else {
        return true;
    };
    if !matches!(status.phase.as_deref(), Some("Running" | "Succeeded")) {
        return true;
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.reason.as_deref())
        .any(|r| !matches!(r, "ContainerCreating" | "PodInitializing"))
}

/// Every object of `store`, one at a time spread evenly over `every`, round after round;
/// the first round starts after `every` (a controller reconciles everything when it
/// starts). Nothing per object is kept between rounds.
fn resync<K>(store: Store<K>, every: Duration) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let round: std::vec::IntoIter<Arc<K>> = Vec::new().into_iter();
    futures::stream::unfold(
        (store, round, every),
        move |(store, mut round, mut gap)| async move {
            loop {
                tokio::time::sleep(gap).await;
                if let Some(o) = round.next() {
                    // Every object here is namespaced; one without a namespace is skipped
                    // rather than ending the resync.
                    let Some(namespace) = o.namespace() else {
                        continue;
                    };
                    let next = ObjectRef::new(&o.name_any()).within(&namespace);
                    return Some((next, (store, round, gap)));
                }
                let all = store.state();
                gap = every / u32::try_from(all.len().max(1)).unwrap_or(u32::MAX);
                round = all.into_iter();
            }
        },
    )
}

/// What follows a failed reconcile: the failure was counted and, if it must show, written
/// to status by [`instrumented`]; here only the next attempt is chosen — backoff for what a
/// retry can mend, nothing but a change (or the resync) for what it cannot.
fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    move |obj, err, ctx| {
        let failure = failure::classify(err);
        ctx.metrics
            .errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: err.reason().into(),
            })
            .inc();
        match failure.retry {
            failure::Retry::Backoff => {
                let delay = ctx.backoff.delay(&status_key(obj.as_ref()));
                tracing::warn!(kind, error = %err, retry_in = ?delay, "reconcile failed");
                Action::requeue(delay)
            }
            failure::Retry::OnChange => {
                tracing::warn!(kind, error = %err, reason = failure.reason, "reconcile failed; waiting for a change");
                Action::await_change()
            }
        }
    }
}

type ReconcileFuture = std::pin::Pin<Box<dyn Future<Output = Result<Action, Error>> + Send>>;

/// Wraps a reconcile with metrics, a span and a deadline, and runs it only while no other
/// lane reconciles the same object (`lock`), on the object as `store` holds it then: waiting
/// for the other lane may have outdated the copy the runner handed over. A failure is
/// counted and, once it must show, written to the object's status (see `failure`).
fn instrumented<K, Fut>(
    kind: &'static str,
    store: Store<Frozen<K>>,
    lock: Arc<Exclusive>,
    deadline: Duration,
    f: fn(Arc<K>, Arc<Context>) -> Fut,
) -> impl FnMut(Arc<Frozen<K>>, Arc<Context>) -> ReconcileFuture
where
    K: Wired,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |obj, ctx| {
        let (store, lock) = (store.clone(), lock.clone());
        Box::pin(async move {
            let name = obj.name_any();
            let namespace = obj.namespace().unwrap_or_default();
            let key = format!("{namespace}/{name}");
            lock.run(&key, async move {
                // Gone from the store: deleted meanwhile, nothing to do.
                let Some(frozen) = store.get(&ObjectRef::from_obj(obj.as_ref())) else {
                    return Ok(Action::await_change());
                };
                // An object being deleted gets no new children: re-creating them would
                // keep a foreground deletion waiting forever. The garbage collector removes
                // the rest.
                if frozen.meta().deletion_timestamp.is_some() {
                    return Ok(Action::await_change());
                }
                // It parsed as `K` when it was frozen; failing now would be a defect here.
                let obj = match frozen.thaw() {
                    Ok(obj) => Arc::new(obj),
                    Err(e) => {
                        tracing::error!(kind, %namespace, %name, error = %e, "a cached object does not parse");
                        return Err(Error::Invalid(format!("{kind} {namespace}/{name} as cached: {e}")));
                    }
                };
                let started = Instant::now();
                let labels = KindLabels { kind: kind.into() };
                let in_flight = ctx.metrics.in_flight.get_or_create(&labels).clone();
                in_flight.inc();
                // What the cloud needs for the namespace comes before any plan of it.
                let run = {
                    let (obj, ctx, namespace) = (obj.clone(), ctx.clone(), namespace.clone());
                    async move {
                        ctx.prepare_namespace(&namespace).await?;
                        f(obj, ctx).await
                    }
                };
                let res = match tokio::time::timeout(deadline, run).await {
                    Ok(res) => res,
                    Err(_) => Err(Error::Timeout(deadline)),
                };
                in_flight.dec();
                ctx.metrics
                    .duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                let result = if res.is_ok() { "ok" } else { "error" };
                ctx.metrics
                    .reconciles
                    .get_or_create(&ResultLabels {
                        kind: kind.into(),
                        result: result.into(),
                    })
                    .inc();
                tracing::debug!(kind, %namespace, %name, result, "reconciled");
                match &res {
                    Ok(_) => ctx.backoff.succeeded(&status_key(obj.as_ref())),
                    Err(e) => failure::record(&ctx, obj.as_ref(), e).await,
                }
                ctx.metrics
                    .retrying
                    .set(i64::try_from(ctx.backoff.len()).unwrap_or(i64::MAX));
                res
            })
            .await
        })
    }
}

/// The children lane of a kind: a second controller over the same store that reconciles
/// an object when its children's state changes (a Job completes or fails, a pod cannot be
/// scheduled, a Deployment becomes available). The main lane serves everything else: new
/// and changed objects, references, the resync. Each lane queues in arrival order, so a
/// burst of new objects (each a few writes to create its children) would otherwise hold
/// back the status of work that already finished by as long as the burst takes; with two
/// lanes, news of a child waits only for other news of children. The lanes share one
/// `Exclusive`: an object is never reconciled by both at once.
fn children_lane<K: Wired>(
    store: Store<Frozen<K>>,
    cfg: ControllerConfig,
) -> Controller<Frozen<K>> {
    Controller::for_shared_stream(futures::stream::pending::<Arc<Frozen<K>>>(), store)
        .with_config(cfg)
}

/// A controller of `K` whose store keeps no `managedFields` nor `kubectl apply`'s copy of
/// the object (the reconcilers never read them; at scale they are a large part of each
/// object), whose watch also feeds `referrers`. Otherwise as `Controller::new`: the same
/// watcher, reflector and triggers.
fn primary<K: Wired>(
    api: Api<Frozen<K>>,
    referrers: &Referrers<Frozen<K>>,
) -> Controller<Frozen<K>> {
    let writer = reflector::store::Writer::<Frozen<K>>::default();
    let reader = writer.as_reader();
    let referrers = referrers.clone();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .modify(|o: &mut Frozen<K>| slim::primary_meta(o.meta_mut()))
            .inspect(move |event| {
                if let Ok(event) = event {
                    referrers.observe(event);
                }
            }),
    )
    .applied_objects();
    Controller::for_stream(stream, reader)
}

/// Spawns the main and children lanes of a kind into `tasks`, sharing one lock; each runs
/// until `shutdown` completes. Every lane is a task of its own: news of a Job is handled
/// while another lane plans children, on another worker thread when there is one, and a
/// lane's wake-up polls only that lane.
fn spawn_lanes<K, Fut>(
    tasks: &mut JoinSet<()>,
    (main, children): (Controller<Frozen<K>>, Controller<Frozen<K>>),
    kind: &'static str,
    f: fn(Arc<K>, Arc<Context>) -> Fut,
    ctx: &Arc<Context>,
    opts: &ControllerOptions,
    shutdown: &(impl Future<Output = ()> + Send + Sync + Clone + 'static),
) where
    K: Wired,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let lock = Arc::new(Exclusive::default());
    for lane in [main, children] {
        let store = lane.store();
        tasks.spawn(
            lane.graceful_shutdown_on(shutdown.clone())
                .run(
                    instrumented(kind, store, lock.clone(), opts.deadline, f),
                    error_policy(kind),
                    ctx.clone(),
                )
                .for_each(|_| futures::future::ready(())),
        );
    }
}

/// The main lane of `K` (its own changes, the resync, the objects it refers to) and its
/// children lane (Jobs, params ConfigMap, pods: by label, or owned when the kind owns its
/// pod).
fn kind_lanes<K: Wired>(
    main: Controller<Frozen<K>>,
    referrers: &Referrers<Frozen<K>>,
    watches: &mut Watches,
    cfg: &ControllerConfig,
    resync_every: Duration,
) -> (Controller<Frozen<K>>, Controller<Frozen<K>>) {
    let store = main.store();
    let mut main = main
        .with_config(cfg.clone())
        .reconcile_on(resync(store.clone(), resync_every));
    for kind in K::REFERS {
        main = match kind {
            Kind::Model => follow::<K, Model>(main, referrers, watches),
            Kind::Dataset => follow::<K, Dataset>(main, referrers, watches),
            // Nothing refers to Servers or Notebooks.
            Kind::Server | Kind::Notebook => main,
        };
    }
    let children = children_lane(store.clone(), cfg.clone())
        .reconcile_on(owners(watches.job_changes(K::KIND)))
        .reconcile_on(owners(watches.configmap_changes(K::KIND)));
    let children = if K::KIND == Kind::Notebook {
        // A Notebook's pod is its own child.
        children.owns_shared_stream(watches.pods())
    } else {
        children.watches_shared_stream(watches.pods(), labelled(store))
    };
    (main, children)
}

/// Runs the four controllers, two lanes each (see `children_lane`), over the caches of
/// `watches` (the ones `ctx` reads), until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    mut watches: Watches,
    opts: ControllerOptions,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let cfg = ControllerConfig::default().concurrency(opts.concurrency);
    let every = opts.resync_every;
    let w = &mut watches;
    let caches = w.caches().clone();

    let model_refs = Referrers::new(Frozen::<Model>::references);
    w.of::<Model>().observe({
        let r = model_refs.clone();
        move |event| r.observe(event)
    });
    let models = Controller::for_shared_stream(w.of::<Model>().applied(), caches.models.clone());
    let (models, model_children) = kind_lanes(models, &model_refs, w, &cfg, every);

    // Datasets refer to nothing: their index stays empty and is never read.
    let dataset_refs = Referrers::new(Frozen::<Dataset>::references);
    let datasets =
        Controller::for_shared_stream(w.of::<Dataset>().applied(), caches.datasets.clone());
    let (datasets, dataset_children) = kind_lanes(datasets, &dataset_refs, w, &cfg, every);

    let server_refs = Referrers::new(Frozen::<Server>::references);
    let servers = primary(api::<Frozen<Server>>(&ctx, &opts), &server_refs);
    let (servers, server_children) = kind_lanes(servers, &server_refs, w, &cfg, every);
    let servers = servers.owns(api::<Service>(&ctx, &opts), managed());
    let server_children = server_children.owns_shared_stream(w.deployments());

    let notebook_refs = Referrers::new(Frozen::<Notebook>::references);
    let notebooks = primary(api::<Frozen<Notebook>>(&ctx, &opts), &notebook_refs);
    let (notebooks, notebook_children) = kind_lanes(notebooks, &notebook_refs, w, &cfg, every);

    let in_use = {
        let (m, d, s, n) = (
            caches.models.clone(),
            caches.datasets.clone(),
            servers.store(),
            notebooks.store(),
        );
        move |ns: &str| {
            in_namespace(&m, ns)
                || in_namespace(&d, ns)
                || in_namespace(&s, ns)
                || in_namespace(&n, ns)
        }
    };
    let deleted_accounts = w.deleted_accounts();

    // Caches first: reconciles read from them, so they must hold a full list before any runs.
    let feeders: Vec<_> = watches.start().into_iter().map(tokio::spawn).collect();
    let mut waited = 0u64;
    loop {
        tokio::select! {
            _ = caches.wait_until_ready() => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                waited += 10;
                tracing::warn!(seconds = waited, "caches not filled yet; is a watch forbidden by RBAC?");
            }
            _ = shutdown.clone() => {
                feeders.iter().for_each(|f| f.abort());
                return;
            }
        }
    }
    tokio::spawn(crate::reconcile::janitor::run(
        ctx.clone(),
        opts.namespace.clone(),
        opts.sweep_every,
        shutdown.clone(),
    ));
    let accounts = tokio::spawn(crate::reconcile::restore_accounts(
        ctx.clone(),
        deleted_accounts,
        in_use,
    ));
    // Dropped (the operator stopping mid-work), the set aborts every lane.
    let mut tasks = JoinSet::new();
    let t = &mut tasks;
    let (model, dataset) = ((models, model_children), (datasets, dataset_children));
    let (server, notebook) = ((servers, server_children), (notebooks, notebook_children));
    spawn_lanes(t, model, "Model", reconcile_model, &ctx, &opts, &shutdown);
    spawn_lanes(
        t,
        dataset,
        "Dataset",
        reconcile_dataset,
        &ctx,
        &opts,
        &shutdown,
    );
    spawn_lanes(
        t,
        server,
        "Server",
        reconcile_server,
        &ctx,
        &opts,
        &shutdown,
    );
    spawn_lanes(
        t,
        notebook,
        "Notebook",
        reconcile_notebook,
        &ctx,
        &opts,
        &shutdown,
    );
    while let Some(done) = tasks.join_next().await {
        // A lane that panicked takes the operator down, as before lanes had tasks of their
        // own, rather than leaving its kind unreconciled while the rest run on.
        if let Err(e) = done
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    accounts.abort();
    feeders.iter().for_each(|f| f.abort());
}

/// Whether `store` holds an object in `namespace` that is not being deleted.
fn in_namespace<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, namespace: &str) -> bool {
    store.state().iter().any(|o| {
        o.meta().namespace.as_deref() == Some(namespace) && o.meta().deletion_timestamp.is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: Option<&str>, labels: serde_json::Value) -> Arc<CachedPod> {
        let mut v = serde_json::json!({
            "metadata": {"name": "m-modeller-x", "namespace": "ns", "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "img"}]},
        });
        if let Some(phase) = phase {
            v["status"] = serde_json::json!({"phase": phase});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn a_pod_triggers_its_object_only_while_it_waits_or_after_it_failed() {
        let store = reflector::store::Writer::<Frozen<Model>>::default().as_reader();
        let route = labelled::<Model>(store);
        let labels = serde_json::json!({"model": "m", "role": "run"});
        for phase in [None, Some("Pending"), Some("Failed"), Some("Unknown")] {
            assert_eq!(
                route(pod(phase, labels.clone())),
                Some(ObjectRef::new("m").within("ns")),
                "phase {phase:?}"
            );
        }
        for phase in ["Running", "Succeeded"] {
            assert_eq!(route(pod(Some(phase), labels.clone())), None, "{phase}");
        }
        // A pod of another kind's workload, or without the label, triggers no Model.
        let dataset = serde_json::json!({"dataset": "m"});
        assert_eq!(route(pod(Some("Pending"), dataset)), None);
        // A running pod whose container keeps failing explains its object.
        let mut crashing = (*pod(Some("Running"), labels.clone())).clone();
        crashing.status.as_mut().unwrap().container_statuses = Some(vec![
            serde_json::from_value(serde_json::json!({
                "name": "main", "image": "img", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}
            }))
            .unwrap(),
        ]);
        assert!(route(Arc::new(crashing)).is_some());
    }

    #[test]
    fn a_running_pod_triggers_an_object_that_shows_a_problem_read_from_pods() {
        let mut writer = reflector::store::Writer::<Frozen<Model>>::default();
        let model = |name: &str, reason: &str| -> Frozen<Model> {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "substratus.ai/v1", "kind": "Model",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"image": "img"},
                "status": {"ready": false, "conditions": [{"type": "Ready", "status": "False",
                    "reason": reason, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
            }))
            .unwrap()
        };
        writer.apply_watcher_event(&watcher::Event::Apply(model("stuck", "Unschedulable")));
        writer.apply_watcher_event(&watcher::Event::Apply(model("fine", "JobNotComplete")));
        let route = labelled::<Model>(writer.as_reader());
        let running = |name: &str| pod(Some("Running"), serde_json::json!({"model": name}));
        assert_eq!(
            route(running("stuck")),
            Some(ObjectRef::new("stuck").within("ns"))
        );
        assert_eq!(route(running("fine")), None);
    }

    #[test]
    fn a_change_of_a_model_triggers_the_objects_that_name_it_in_its_namespace() {
        let obj = |kind: &str, ns: &str, name: &str, spec: serde_json::Value| {
            serde_json::json!({"apiVersion": "substratus.ai/v1", "kind": kind,
                "metadata": {"name": name, "namespace": ns}, "spec": spec})
        };
        let server = |ns: &str, name: &str, model: &str| -> Frozen<Server> {
            serde_json::from_value(obj(
                "Server",
                ns,
                name,
                serde_json::json!({"image": "img", "model": {"name": model}}),
            ))
            .unwrap()
        };
        let model = |ns: &str, name: &str, spec: serde_json::Value| -> Frozen<Model> {
            serde_json::from_value(obj("Model", ns, name, spec)).unwrap()
        };
        let servers = Referrers::new(Frozen::<Server>::references);
        for s in [
            server("ns", "a", "m"),
            server("ns", "b", "m"),
            server("ns", "c", "other"),
            server("elsewhere", "d", "m"),
        ] {
            servers.observe(&watcher::Event::Apply(s));
        }
        let m = model("ns", "m", serde_json::json!({"image": "img"}));
        let mut found = dependants(&servers, Kind::Model, &m);
        found.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(
            found,
            [
                ObjectRef::new("a").within("ns"),
                ObjectRef::new("b").within("ns")
            ]
        );
        // A Server deleted is no longer triggered.
        servers.observe(&watcher::Event::Delete(server("ns", "a", "m")));
        assert_eq!(
            dependants(&servers, Kind::Model, &m),
            [ObjectRef::new("b").within("ns")]
        );

        // A Model names its base Model and its Dataset; each triggers it by its own kind.
        let models = Referrers::new(Frozen::<Model>::references);
        let tuned = model(
            "ns",
            "tuned",
            serde_json::json!({"image": "img", "model": {"name": "m"}, "dataset": {"name": "d"}}),
        );
        models.observe(&watcher::Event::Apply(tuned));
        models.observe(&watcher::Event::Apply(m.clone()));
        assert_eq!(
            dependants(&models, Kind::Model, &m),
            [ObjectRef::new("tuned").within("ns")]
        );
        let d: Dataset = serde_json::from_value(obj(
            "Dataset",
            "ns",
            "d",
            serde_json::json!({"image": "img"}),
        ))
        .unwrap();
        assert_eq!(
            dependants(&models, Kind::Dataset, &d),
            [ObjectRef::new("tuned").within("ns")]
        );
        // A Model named "d" is not the Dataset "d".
        let not_d = model("ns", "d", serde_json::json!({"image": "img"}));
        assert!(dependants(&models, Kind::Model, &not_d).is_empty());
    }
}
