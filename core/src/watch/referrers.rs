//! Who refers to whom: a reverse index of the references between objects (a Server naming
//! its Model, a Model its base Model and Dataset), fed by the watch events of the objects
//! that refer. A change of a referenced object then finds the objects that name it by one
//! lookup instead of a scan of every object of the referring kind: at 10,000 Models each
//! status write of one Model would otherwise walk all 10,000.
//!
//! Only objects that refer to something are held, as keys and names.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::runtime::watcher;

use crate::names::Kind;

/// The objects an object refers to, by kind and name (in its own namespace).
pub type References<K> = for<'a> fn(&'a K) -> Vec<(Kind, &'a str)>;

/// The objects of one kind `K` that refer to others, indexed by what they refer to.
pub struct Referrers<K> {
    inner: Arc<Mutex<Inner>>,
    references: References<K>,
}

impl<K> Clone for Referrers<K> {
    fn clone(&self) -> Self {
        Referrers {
            inner: self.inner.clone(),
            references: self.references,
        }
    }
}

/// `namespace` and name of a referrer or a referenced object.
type Key = (Box<str>, Box<str>);

/// What one object names: kind and name of each.
type Names = Box<[(Kind, Box<str>)]>;

#[derive(Default)]
struct Inner {
    /// What each referrer names (only referrers that name something).
    names: HashMap<Key, Names>,
    /// For each referenced kind, namespace and name: the names of its referrers.
    by_referenced: HashMap<(Kind, Key), HashSet<Box<str>>>,
    /// A relist being collected: swapped in whole when it is complete.
    relist: Option<HashMap<Key, Names>>,
}

impl Inner {
    fn set(&mut self, key: Key, refs: Names) {
        // Most writes of a referrer (its status) leave what it names as it was.
        if self.names.get(&key) == Some(&refs) {
            return;
        }
        self.remove(&key);
        for (kind, name) in refs.iter() {
            self.by_referenced
                .entry((*kind, (key.0.clone(), name.clone())))
                .or_default()
                .insert(key.1.clone());
        }
        if !refs.is_empty() {
            self.names.insert(key, refs);
        }
    }

    fn remove(&mut self, key: &Key) {
        let Some(old) = self.names.remove(key) else {
            return;
        };
        for (kind, name) in old.iter() {
            let referenced = (*kind, (key.0.clone(), name.clone()));
            if let Some(set) = self.by_referenced.get_mut(&referenced) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.by_referenced.remove(&referenced);
                }
            }
        }
    }
}

impl<K: Resource> Referrers<K> {
    /// An empty index of the references `references` reads from each object.
    pub fn new(references: References<K>) -> Referrers<K> {
        Referrers {
            inner: Arc::default(),
            references,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, obj: &K) -> Option<(Key, Names)> {
        let meta = obj.meta();
        let key = (
            meta.namespace.as_deref()?.into(),
            meta.name.as_deref()?.into(),
        );
        let refs = (self.references)(obj)
            .into_iter()
            .map(|(kind, name)| (kind, name.into()))
            .collect();
        Some((key, refs))
    }

    /// Follows one watch event of the referring kind (after its store applied it).
    pub fn observe(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(obj) => {
                if let Some((key, refs)) = self.entry(obj) {
                    self.lock().set(key, refs);
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some((key, _)) = self.entry(obj) {
                    self.lock().remove(&key);
                }
            }
            watcher::Event::Init => self.lock().relist = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let Some((key, refs)) = self.entry(obj).filter(|(_, r)| !r.is_empty()) {
                    let mut inner = self.lock();
                    inner.relist.get_or_insert_default().insert(key, refs);
                }
            }
            watcher::Event::InitDone => {
                let mut inner = self.lock();
                let listed = inner.relist.take().unwrap_or_default();
                *inner = Inner::default();
                for (key, refs) in listed {
                    inner.set(key, refs);
                }
            }
        }
    }

    /// The names of the objects in `namespace` that refer to `name` of `kind`.
    pub fn of(&self, kind: Kind, namespace: &str, name: &str) -> Vec<Box<str>> {
        self.lock()
            .by_referenced
            .get(&(kind, (namespace.into(), name.into())))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many objects refer to something.
    pub fn len(&self) -> usize {
        self.lock().names.len()
    }

    /// Whether no object refers to anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A ConfigMap standing for a referrer: `data` maps `model`/`dataset` to names.
    fn obj(ns: &str, name: &str, refs: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(
                refs.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn refs(c: &ConfigMap) -> Vec<(Kind, &str)> {
        c.data
            .iter()
            .flatten()
            .filter_map(|(k, v)| match k.as_str() {
                "model" => Some((Kind::Model, v.as_str())),
                "dataset" => Some((Kind::Dataset, v.as_str())),
                _ => None,
            })
            .collect()
    }

    fn sorted(mut v: Vec<Box<str>>) -> Vec<Box<str>> {
        v.sort();
        v
    }

    #[test]
    fn referrers_follow_applies_deletes_and_relists() {
        let r = Referrers::new(refs as References<ConfigMap>);
        use watcher::Event::*;
        r.observe(&Apply(obj("ns", "s1", &[("model", "m")])));
        r.observe(&Apply(obj("ns", "s2", &[("model", "m"), ("dataset", "d")])));
        r.observe(&Apply(obj("other", "s3", &[("model", "m")])));
        // One that names nothing is not held.
        r.observe(&Apply(obj("ns", "plain", &[])));
        assert_eq!(r.len(), 3);
        assert_eq!(
            sorted(r.of(Kind::Model, "ns", "m")),
            ["s1".into(), "s2".into()]
        );
        assert_eq!(r.of(Kind::Dataset, "ns", "d"), ["s2".into()]);
        // Kinds, namespaces and names are told apart.
        assert!(r.of(Kind::Dataset, "ns", "m").is_empty());
        assert_eq!(r.of(Kind::Model, "other", "m"), ["s3".into()]);
        assert!(r.of(Kind::Model, "ns", "n").is_empty());

        // Written again naming the same objects (a status write): nothing changes.
        r.observe(&Apply(obj("ns", "s2", &[("model", "m"), ("dataset", "d")])));
        assert_eq!(
            sorted(r.of(Kind::Model, "ns", "m")),
            ["s1".into(), "s2".into()]
        );
        assert_eq!(r.of(Kind::Dataset, "ns", "d"), ["s2".into()]);

        // A reference changed: the old one is forgotten.
        r.observe(&Apply(obj("ns", "s1", &[("model", "n")])));
        assert_eq!(r.of(Kind::Model, "ns", "m"), ["s2".into()]);
        assert_eq!(r.of(Kind::Model, "ns", "n"), ["s1".into()]);
        // Deleted, or no longer naming anything: gone.
        r.observe(&Delete(obj(
            "ns",
            "s2",
            &[("model", "m"), ("dataset", "d")],
        )));
        r.observe(&Apply(obj("ns", "s1", &[])));
        assert!(r.of(Kind::Model, "ns", "m").is_empty());
        assert!(r.of(Kind::Model, "ns", "n").is_empty());
        assert!(r.of(Kind::Dataset, "ns", "d").is_empty());
        assert_eq!(r.len(), 1);
        assert_eq!(r.lock().by_referenced.len(), 1, "no empty sets are left");

        // A relist replaces everything once complete: s3 was deleted meanwhile.
        r.observe(&Init);
        r.observe(&InitApply(obj("ns", "s4", &[("model", "m")])));
        r.observe(&InitApply(obj("ns", "plain", &[])));
        assert_eq!(r.of(Kind::Model, "other", "m"), ["s3".into()]);
        assert!(r.of(Kind::Model, "ns", "m").is_empty());
        r.observe(&InitDone);
        assert!(r.of(Kind::Model, "other", "m").is_empty());
        assert_eq!(r.of(Kind::Model, "ns", "m"), ["s4".into()]);
        assert_eq!(r.len(), 1);
    }
}
