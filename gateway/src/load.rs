//! Requests in flight (per Server and per replica) and requests held waiting for a replica.
//! Guards count a request for as long as they live: the forwarded response's body holds its
//! guard until the last byte is sent or the client goes away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::table::ServerKey;

#[derive(Debug, Default)]
struct ServerLoad {
    in_flight: u32,
    held: u32,
    replicas: HashMap<SocketAddr, u32>,
}

/// The load of every Server through this gateway.
#[derive(Clone, Debug, Default)]
pub struct Loads {
    inner: Arc<Mutex<HashMap<ServerKey, ServerLoad>>>,
}

impl Loads {
    fn lock(&self) -> MutexGuard<'_, HashMap<ServerKey, ServerLoad>> {
        // A panic elsewhere never leaves the counts half-written: keep using them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request forwarded to `addr` until the guard drops.
    pub fn forward(&self, key: &ServerKey, addr: SocketAddr) -> InFlight {
        let mut all = self.lock();
        let l = all.entry(key.clone()).or_default();
        l.in_flight += 1;
        *l.replicas.entry(addr).or_default() += 1;
        InFlight {
            loads: self.clone(),
            key: key.clone(),
            addr,
        }
    }

    /// Counts a held request until the guard drops, unless `limit` are held already.
    pub fn hold(&self, key: &ServerKey, limit: u32) -> Option<Held> {
        let mut all = self.lock();
        let l = all.entry(key.clone()).or_default();
        if l.held >= limit {
            return None;
        }
        l.held += 1;
        Some(Held {
            loads: self.clone(),
            key: key.clone(),
        })
    }

    /// Requests in flight to one replica.
    pub fn replica(&self, key: &ServerKey, addr: SocketAddr) -> u32 {
        self.lock()
            .get(key)
            .and_then(|l| l.replicas.get(&addr).copied())
            .unwrap_or(0)
    }

    /// In flight and held, per Server.
    pub fn snapshot(&self) -> HashMap<ServerKey, (u32, u32)> {
        self.lock()
            .iter()
            .map(|(k, l)| (k.clone(), (l.in_flight, l.held)))
            .collect()
    }

    fn release(&self, key: &ServerKey, f: impl FnOnce(&mut ServerLoad)) {
        let mut all = self.lock();
        if let Some(l) = all.get_mut(key) {
            f(l);
            if l.in_flight == 0 && l.held == 0 {
                all.remove(key);
            }
        }
    }
}

/// One forwarded request.
#[derive(Debug)]
pub struct InFlight {
    loads: Loads,
    key: ServerKey,
    addr: SocketAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let addr = self.addr;
        self.loads.release(&self.key, |l| {
            l.in_flight = l.in_flight.saturating_sub(1);
            if let Some(n) = l.replicas.get_mut(&addr) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    l.replicas.remove(&addr);
                }
            }
        });
    }
}

/// One held request.
#[derive(Debug)]
pub struct Held {
    loads: Loads,
    key: ServerKey,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.loads
            .release(&self.key, |l| l.held = l.held.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_while_they_live_and_the_hold_queue_is_bounded() {
        let loads = Loads::default();
        let k = ServerKey {
            namespace: "a".into(),
            name: "s".into(),
        };
        let r1: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let r2: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        let a = loads.forward(&k, r1);
        let b = loads.forward(&k, r1);
        let c = loads.forward(&k, r2);
        let h1 = loads.hold(&k, 2).unwrap();
        let h2 = loads.hold(&k, 2).unwrap();
        assert!(
            loads.hold(&k, 2).is_none(),
            "a third held request is refused"
        );
        assert_eq!(loads.snapshot()[&k], (3, 2));
        assert_eq!((loads.replica(&k, r1), loads.replica(&k, r2)), (2, 1));
        drop((a, h1));
        assert_eq!(loads.snapshot()[&k], (2, 1));
        assert!(loads.hold(&k, 2).is_some());
        drop((b, c, h2));
        assert!(loads.snapshot().is_empty(), "idle Servers leave no entry");
        assert_eq!(loads.replica(&k, r1), 0);
    }
}
