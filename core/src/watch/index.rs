//! Compact watch-fed indexes for children a reconcile reads only to compare a hash (and, for
//! volumes, to find their claim). A reflector store would keep a whole `ObjectMeta` per
//! object (a map node per annotation alone is half a kilobyte); an index keeps the key and a
//! small summary, so 10,000 objects cost a few hundred kilobytes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

/// `namespace/name`, or `name` for cluster-scoped objects.
pub fn key(namespace: Option<&str>, name: &str) -> Box<str> {
    match namespace {
        Some(ns) => format!("{ns}/{name}").into_boxed_str(),
        None => name.into(),
    }
}

/// Summaries `E` of the objects of one watch, by [`key`].
pub struct Index<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Index<E> {
    fn clone(&self) -> Self {
        Index {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E> {
    map: RwLock<HashMap<Box<str>, E>>,
    ready: tokio::sync::watch::Sender<bool>,
}

impl<E: Clone> Index<E> {
    /// An empty index; [`index`] feeds it from a watch, tests by hand.
    pub(crate) fn new() -> Index<E> {
        Index {
            inner: Arc::new(Inner {
                map: RwLock::new(HashMap::new()),
                ready: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// The summary of an object, if it exists.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<E> {
        self.read().get(&key(namespace, name)).cloned()
    }

    /// Writes an entry as a watch event would (tests that build caches by hand).
    #[cfg(test)]
    pub(crate) fn insert(&self, namespace: Option<&str>, name: &str, e: E) {
        self.write().insert(key(namespace, name), e);
    }

    /// How many objects the index holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f` of the whole index, read in place (a write waits meanwhile).
    pub fn with<R>(&self, f: impl FnOnce(&HashMap<Box<str>, E>) -> R) -> R {
        f(&self.read())
    }

    /// Completes once the index holds a first full list.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, E>> {
        self.inner.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Box<str>, E>> {
        self.inner.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one watch event, already summarized; a relist is collected aside and swapped
    /// in whole, as a reflector does, so readers never see a half-filled index. `notify` is
    /// told of every entry written or removed, with what it was before, after the index
    /// shows the change.
    fn apply(
        &self,
        buffer: &mut HashMap<Box<str>, E>,
        event: watcher::Event<(Box<str>, E)>,
        notify: &Notify<E>,
    ) {
        match event {
            watcher::Event::Apply((k, e)) => {
                let old = self.write().insert(k.clone(), e.clone());
                notify(&k, Change::of(old.as_ref(), &e));
            }
            watcher::Event::Delete((k, e)) => {
                let old = self.write().remove(&k);
                notify(&k, Change::Removed(old.as_ref().unwrap_or(&e)));
            }
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply((k, e)) => {
                buffer.insert(k, e);
            }
            watcher::Event::InitDone => {
                let old = std::mem::replace(&mut *self.write(), std::mem::take(buffer));
                self.inner.ready.send_replace(true);
                // What the relist brought, and what it no longer has (deleted while the watch
                // was down).
                let now = self.read();
                now.iter()
                    .for_each(|(k, e)| notify(k, Change::of(old.get(k), e)));
                old.iter()
                    .filter(|(k, _)| !now.contains_key(*k))
                    .for_each(|(k, e)| notify(k, Change::Removed(e)));
            }
        }
    }
}

/// What happened to an entry of an index.
#[derive(Debug, PartialEq)]
pub enum Change<'a, E> {
    Added(&'a E),
    /// Written again: `old` and `new` may be equal (the object changed outside the summary).
    Updated {
        old: &'a E,
        new: &'a E,
    },
    Removed(&'a E),
}

impl<'a, E> Change<'a, E> {
    fn of(old: Option<&'a E>, new: &'a E) -> Change<'a, E> {
        match old {
            None => Change::Added(new),
            Some(old) => Change::Updated { old, new },
        }
    }

    /// The entry as it is now, or as it was when removed.
    pub fn entry(&self) -> &'a E {
        match self {
            Change::Added(e) | Change::Removed(e) => e,
            Change::Updated { new, .. } => new,
        }
    }
}

/// Told of each change to an index: the key and the change.
pub type Notify<E> = Box<dyn Fn(&str, Change<'_, E>) + Send + Sync>;

/// A [`Notify`] that does nothing.
pub fn quiet<E>() -> Notify<E> {
    Box::new(|_, _| {})
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An index of the objects `api` lists under `config`, summarized by `summarize`, and the
/// task that keeps it fed (the watch retries with backoff, like the other caches). Each
/// object is dropped once summarized.
pub fn index<T, E>(
    api: Api<T>,
    config: watcher::Config,
    summarize: fn(&T) -> E,
    notify: Notify<E>,
) -> (Index<E>, Task)
where
    T: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    E: Clone + Send + Sync + 'static,
{
    let idx = Index::new();
    let feeder = idx.clone();
    let task = Box::pin(async move {
        let mut buffer = HashMap::new();
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            // Errors are retried by the backoff; the index keeps what it had meanwhile.
            if let Ok(event) = event {
                feeder.apply(&mut buffer, summarized(event, summarize), &notify);
            }
        }
    });
    (idx, task)
}

fn key_of(m: &ObjectMeta) -> Box<str> {
    key(m.namespace.as_deref(), m.name.as_deref().unwrap_or(""))
}

/// A watch event as index entries: key and summary.
fn summarized<T, E>(
    event: watcher::Event<T>,
    summarize: fn(&T) -> E,
) -> watcher::Event<(Box<str>, E)>
where
    T: Resource,
{
    let entry = |o: T| (key_of(o.meta()), summarize(&o));
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(entry(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(entry(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(entry(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The spec-hash annotation of an object, if any.
pub fn spec_hash(m: &ObjectMeta) -> Option<Box<str>> {
    m.annotations
        .as_ref()?
        .get(crate::names::SPEC_HASH_ANNOTATION)
        .map(|h| h.as_str().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::PartialObjectMeta;
    use std::sync::Mutex;

    type Entry = watcher::Event<(Box<str>, Option<Box<str>>)>;

    fn meta(ns: Option<&str>, name: &str, hash: Option<&str>) -> PartialObjectMeta<ConfigMap> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: ns.map(Into::into),
                annotations: hash
                    .map(|h| [(crate::plan::SPEC_HASH_ANNOTATION.to_owned(), h.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn hash(o: &PartialObjectMeta<ConfigMap>) -> Option<Box<str>> {
        spec_hash(&o.metadata)
    }

    fn apply(ns: Option<&str>, name: &str, h: Option<&str>) -> Entry {
        summarized(watcher::Event::Apply(meta(ns, name, h)), hash)
    }
    fn delete(ns: Option<&str>, name: &str, h: Option<&str>) -> Entry {
        summarized(watcher::Event::Delete(meta(ns, name, h)), hash)
    }
    fn listed(ns: Option<&str>, name: &str, h: Option<&str>) -> Entry {
        summarized(watcher::Event::InitApply(meta(ns, name, h)), hash)
    }

    #[tokio::test]
    async fn an_index_follows_a_watch_and_swaps_in_relists_whole() {
        let idx: Index<Option<Box<str>>> = Index::new();
        let told = Arc::new(Mutex::new(Vec::<String>::new()));
        let t = told.clone();
        let notify: Notify<Option<Box<str>>> = Box::new(move |k, c| {
            let what = match c {
                Change::Added(_) => "+",
                Change::Updated { old, new } if old == new => "=",
                Change::Updated { .. } => "~",
                Change::Removed(_) => "-",
            };
            let e = c.entry().as_deref().unwrap_or("none");
            t.lock().unwrap().push(format!("{what}{k}={e}"))
        });
        let taken = || std::mem::take(&mut *told.lock().unwrap());
        let mut buffer = HashMap::new();
        idx.apply(&mut buffer, watcher::Event::Init, &notify);
        idx.apply(&mut buffer, listed(Some("ns"), "a", Some("h1")), &notify);
        // Not ready, nothing visible and nobody told, before the list is complete.
        assert!(idx.is_empty());
        assert!(!*idx.inner.ready.borrow());
        assert!(taken().is_empty());
        idx.apply(&mut buffer, watcher::Event::InitDone, &notify);
        idx.wait_until_ready().await;
        assert_eq!(idx.get(Some("ns"), "a"), Some(Some("h1".into())));
        assert_eq!(idx.get(Some("other"), "a"), None);
        assert_eq!(taken(), ["+ns/a=h1"]);

        idx.apply(&mut buffer, apply(Some("ns"), "b", None), &notify);
        assert_eq!(idx.get(Some("ns"), "b"), Some(None));
        // Written again: the same summary, then another.
        idx.apply(&mut buffer, apply(Some("ns"), "b", None), &notify);
        idx.apply(&mut buffer, apply(Some("ns"), "b", Some("h2")), &notify);
        idx.apply(&mut buffer, apply(Some("ns"), "b", None), &notify);
        idx.apply(&mut buffer, delete(Some("ns"), "a", Some("h1")), &notify);
        assert_eq!(idx.get(Some("ns"), "a"), None);
        assert_eq!(
            taken(),
            [
                "+ns/b=none",
                "=ns/b=none",
                "~ns/b=h2",
                "~ns/b=none",
                "-ns/a=h1"
            ]
        );

        // A relist replaces everything at its end: "b" was deleted while the watch was down,
        // and whoever follows "b" is told; "c" is new.
        idx.apply(&mut buffer, watcher::Event::Init, &notify);
        idx.apply(&mut buffer, listed(Some("ns"), "c", Some("h3")), &notify);
        assert_eq!(idx.get(Some("ns"), "b"), Some(None));
        idx.apply(&mut buffer, watcher::Event::InitDone, &notify);
        assert_eq!(idx.get(Some("ns"), "b"), None);
        let all = idx.with(|m| m.clone());
        assert_eq!(all, HashMap::from([("ns/c".into(), Some("h3".into()))]));
        assert_eq!(taken(), ["+ns/c=h3", "-ns/b=none"]);
        // A relist that finds "c" as it was tells it as unchanged.
        idx.apply(&mut buffer, watcher::Event::Init, &notify);
        idx.apply(&mut buffer, listed(Some("ns"), "c", Some("h3")), &notify);
        idx.apply(&mut buffer, watcher::Event::InitDone, &notify);
        assert_eq!(taken(), ["=ns/c=h3"]);

        // Cluster-scoped objects are keyed by name.
        idx.apply(&mut buffer, apply(None, "pv", Some("h")), &notify);
        assert_eq!(idx.get(None, "pv"), Some(Some("h".into())));
        assert_eq!(idx.len(), 2);
    }
}
