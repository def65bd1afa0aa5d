//! One reconcile at a time per object across the controllers' two lanes (see
//! `controllers::run`): each lane's runner keeps its own objects apart, and this keeps the
//! lanes apart from each other. A key is held only while a reconcile of it runs or waits,
//! so the map is as large as the reconciles in flight, not as the objects watched.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

type Held = HashMap<Box<str>, Arc<tokio::sync::Mutex<()>>>;

/// Keyed mutual exclusion for futures.
#[derive(Default)]
pub struct Exclusive {
    held: Mutex<Held>,
}

/// A key in use; the last user removes it from the map.
struct InUse {
    owner: Arc<Exclusive>,
    key: Box<str>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut held = self.owner.held();
        // Clones are taken only under the map's lock: the map's and this one are the
        // last two exactly when no other reconcile of the key runs or waits.
        if Arc::strong_count(&self.lock) == 2 {
            held.remove(&self.key);
        }
    }
}

impl Exclusive {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` once no other future of the same `key` runs under this `Exclusive`.
    pub async fn run<F: Future>(self: Arc<Self>, key: &str, f: F) -> F::Output {
        let lock = self.held().entry(key.into()).or_default().clone();
        let in_use = InUse {
            owner: self,
            key: key.into(),
            lock,
        };
        let _turn = in_use.lock.lock().await;
        f.await
    }

    /// Keys held now (in use or waited for).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held().len()
    }
}

#[cfg(test)]
mod tests {
    use super::Exclusive;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_future_per_key_at_a_time_and_no_key_kept_afterwards() {
        let ex = Arc::new(Exclusive::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (ex, inside, most) = (ex.clone(), inside.clone(), most.clone());
                tokio::spawn(async move {
                    ex.run("ns/a", async {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "two ran at once");
        assert_eq!(ex.len(), 0, "a finished key stayed in the map");
    }

    #[tokio::test]
    async fn different_keys_run_together_and_a_dropped_future_releases_its_key() {
        let ex = Arc::new(Exclusive::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // "a" waits inside until told; "b" must still run meanwhile.
        let a = tokio::spawn(ex.clone().run("ns/a", async move {
            let _ = rx.await;
        }));
        tokio::task::yield_now().await;
        let b = tokio::time::timeout(Duration::from_secs(5), ex.clone().run("ns/b", async { 7 }));
        assert_eq!(b.await.expect("b waited for a"), 7);
        assert_eq!(ex.len(), 1);
        // A reconcile cancelled while it holds its key (shutdown) gives it back.
        a.abort();
        let _ = a.await;
        drop(tx);
        assert_eq!(ex.len(), 0);
        let again =
            tokio::time::timeout(Duration::from_secs(5), ex.clone().run("ns/a", async { 1 }));
        assert_eq!(again.await.expect("a stayed locked"), 1);
    }
}
