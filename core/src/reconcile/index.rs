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
use kube::api::{Api, PartialObjectMeta};
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
    fn new() -> Index<E> {
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

    /// How many objects the index holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key with its summary.
    pub fn entries(&self) -> Vec<(Box<str>, E)> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
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

    /// Applies one watch event; a relist is collected aside and swapped in whole, as a
    /// reflector does, so readers never see a half-filled index.
    fn apply(
        &self,
        buffer: &mut HashMap<Box<str>, E>,
        event: watcher::Event<ObjectMeta>,
        summarize: fn(&ObjectMeta) -> E,
    ) {
        let k = |m: &ObjectMeta| key(m.namespace.as_deref(), m.name.as_deref().unwrap_or(""));
        match event {
            watcher::Event::Apply(m) => {
                self.write().insert(k(&m), summarize(&m));
            }
            watcher::Event::Delete(m) => {
                self.write().remove(&k(&m));
            }
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply(m) => {
                buffer.insert(k(&m), summarize(&m));
            }
            watcher::Event::InitDone => {
                *self.write() = std::mem::take(buffer);
                self.inner.ready.send_replace(true);
            }
        }
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An index of the objects `api` lists under `config`, summarized by `summarize`, and the
/// task that keeps it fed (the watch retries with backoff, like the other caches).
pub fn index<K, E>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
    summarize: fn(&ObjectMeta) -> E,
) -> (Index<E>, Task)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
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
                feeder.apply(&mut buffer, metadata_of(event), summarize);
            }
        }
    });
    (idx, task)
}

fn metadata_of<K>(event: watcher::Event<PartialObjectMeta<K>>) -> watcher::Event<ObjectMeta> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.metadata),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.metadata),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.metadata),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The spec-hash annotation of an object, if any.
pub fn spec_hash(m: &ObjectMeta) -> Option<Box<str>> {
    super::hash_of(m).map(|h| h.as_str().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: Option<&str>, name: &str, hash: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            annotations: hash
                .map(|h| [(crate::plan::SPEC_HASH_ANNOTATION.to_owned(), h.to_owned())].into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_index_follows_a_watch_and_swaps_in_relists_whole() {
        let idx: Index<Option<Box<str>>> = Index::new();
        let mut buffer = HashMap::new();
        idx.apply(&mut buffer, watcher::Event::Init, spec_hash);
        idx.apply(
            &mut buffer,
            watcher::Event::InitApply(meta(Some("ns"), "a", Some("h1"))),
            spec_hash,
        );
        // Not ready, and nothing visible, before the list is complete.
        assert!(idx.is_empty());
        assert!(!*idx.inner.ready.borrow());
        idx.apply(&mut buffer, watcher::Event::InitDone, spec_hash);
        idx.wait_until_ready().await;
        assert_eq!(idx.get(Some("ns"), "a"), Some(Some("h1".into())));
        assert_eq!(idx.get(Some("other"), "a"), None);

        idx.apply(
            &mut buffer,
            watcher::Event::Apply(meta(Some("ns"), "b", None)),
            spec_hash,
        );
        assert_eq!(idx.get(Some("ns"), "b"), Some(None));
        idx.apply(
            &mut buffer,
            watcher::Event::Delete(meta(Some("ns"), "a", Some("h1"))),
            spec_hash,
        );
        assert_eq!(idx.get(Some("ns"), "a"), None);

        // A relist replaces everything at its end: "b" was deleted while the watch was down.
        idx.apply(&mut buffer, watcher::Event::Init, spec_hash);
        idx.apply(
            &mut buffer,
            watcher::Event::InitApply(meta(Some("ns"), "c", Some("h3"))),
            spec_hash,
        );
        assert_eq!(idx.get(Some("ns"), "b"), Some(None));
        idx.apply(&mut buffer, watcher::Event::InitDone, spec_hash);
        assert_eq!(idx.get(Some("ns"), "b"), None);
        assert_eq!(idx.entries(), vec![("ns/c".into(), Some("h3".into()))]);

        // Cluster-scoped objects are keyed by name.
        idx.apply(
            &mut buffer,
            watcher::Event::Apply(meta(None, "pv", Some("h"))),
            spec_hash,
        );
        assert_eq!(idx.get(None, "pv"), Some(Some("h".into())));
        assert_eq!(idx.len(), 2);
    }
}
