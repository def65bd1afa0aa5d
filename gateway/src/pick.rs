//! Which replica takes a request; pure.
//!
//! - `LeastLoad`: the fewest requests in flight; ties go round in turn (`turn`).
//! - `PrefixHash`: consistent hashing with bounded load. Each replica owns [`POINTS`] points
//!   on a ring; the prompt prefix's hash picks the first point clockwise, and a replica is
//!   taken only while its load stays within `loadFactor` percent of the mean, else the walk
//!   goes on. Requests that share a prefix meet the replica whose KV cache holds it, and no
//!   replica takes more than its bounded share.

use std::net::SocketAddr;

use substratus_crds::{Routing, RoutingStrategy};

/// Points per replica on the ring.
pub const POINTS: u64 = 32;

/// 64-bit FNV-1a: stable across builds and processes, so every gateway replica hashes alike.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A point on the ring: FNV-1a, then the 64-bit finaliser of MurmurHash3 so that keys that
/// differ in their last bytes land far apart.
pub fn point(bytes: &[u8]) -> u64 {
    let mut h = fnv1a(bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A replica and its load (requests in flight through this gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub load: u32,
}

/// The replica for a request, among `candidates` (those not yet tried), or `None` if empty.
pub fn pick(
    routing: &Routing,
    candidates: &[Candidate],
    prefix: &str,
    turn: usize,
) -> Option<SocketAddr> {
    if candidates.is_empty() {
        return None;
    }
    match routing.strategy {
        RoutingStrategy::LeastLoad => least_load(candidates, turn),
        RoutingStrategy::PrefixHash => {
            let prefix = crate::openai::prefix_of(prefix, routing.prefix_length());
            Some(prefix_hash(candidates, prefix, routing.load_factor()))
        }
    }
}

fn least_load(candidates: &[Candidate], turn: usize) -> Option<SocketAddr> {
    let min = candidates.iter().map(|c| c.load).min()?;
    let least: Vec<&Candidate> = candidates.iter().filter(|c| c.load == min).collect();
    Some(least[turn % least.len()].addr)
}

fn prefix_hash(candidates: &[Candidate], prefix: &str, load_factor: u32) -> SocketAddr {
    let mut ring: Vec<(u64, usize)> = Vec::with_capacity(candidates.len() * POINTS as usize);
    for (i, c) in candidates.iter().enumerate() {
        let id = c.addr.to_string();
        for p in 0..POINTS {
            let mut key = id.clone().into_bytes();
            key.extend_from_slice(&p.to_le_bytes());
            ring.push((point(&key), i));
        }
    }
    ring.sort_unstable();
    // The bound counts this request: ceil((total + 1) / n × factor / 100).
    let total: u64 = candidates.iter().map(|c| u64::from(c.load)).sum::<u64>() + 1;
    let n = candidates.len() as u64;
    let bound = (total * u64::from(load_factor)).div_ceil(n * 100).max(1);
    let h = point(prefix.as_bytes());
    let start = ring.partition_point(|(p, _)| *p < h);
    let mut fallback = None;
    for k in 0..ring.len() {
        let i = ring[(start + k) % ring.len()].1;
        let c = candidates[i];
        if u64::from(c.load) < bound {
            return c.addr;
        }
        fallback.get_or_insert(c.addr);
    }
    // Unreachable with a bound ≥ the mean, kept total: the first replica on the walk.
    fallback.unwrap_or(candidates[0].addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8080))
    }

    fn cands(loads: &[u32]) -> Vec<Candidate> {
        loads
            .iter()
            .enumerate()
            .map(|(i, l)| Candidate {
                addr: addr(i as u8 + 1),
                load: *l,
            })
            .collect()
    }

    fn hashing(factor: i32) -> Routing {
        Routing {
            strategy: RoutingStrategy::PrefixHash,
            prefix_length: Some(8),
            load_factor: Some(factor),
        }
    }

    #[test]
    fn least_load_takes_the_idlest_and_takes_turns_among_equals() {
        let r = Routing::default();
        assert_eq!(pick(&r, &cands(&[3, 1, 2]), "", 0), Some(addr(2)));
        let turns: Vec<_> = (0..4)
            .map(|t| pick(&r, &cands(&[0, 5, 0]), "", t).unwrap())
            .collect();
        assert_eq!(turns, [addr(1), addr(3), addr(1), addr(3)]);
        assert_eq!(pick(&r, &[], "", 0), None);
    }

    #[test]
    fn a_shared_prefix_meets_the_same_replica_whatever_follows_it() {
        let r = hashing(125);
        let c = cands(&[0, 0, 0, 0]);
        let a = pick(&r, &c, "You are a helpful assistant. Q1", 0);
        let b = pick(&r, &c, "You are a helpful assistant. Q2", 7);
        assert_eq!(a, b, "the first 8 characters decide");
        // Different prefixes spread over the replicas.
        let spread: std::collections::BTreeSet<_> = (0..200)
            .map(|i| pick(&r, &c, &format!("{i:08}"), 0).unwrap())
            .collect();
        assert_eq!(spread.len(), 4, "{spread:?}");
    }

    #[test]
    fn a_replica_over_its_bounded_share_passes_the_request_on() {
        let r = hashing(125);
        let idle = cands(&[0, 0, 0]);
        let home = pick(&r, &idle, "prefix-x", 0).unwrap();
        // Load the home replica: 3 + 0 + 0, bound ceil(4 × 1.25 / 3) = 2.
        let loaded: Vec<Candidate> = idle
            .iter()
            .map(|c| Candidate {
                addr: c.addr,
                load: if c.addr == home { 3 } else { 0 },
            })
            .collect();
        let moved = pick(&r, &loaded, "prefix-x", 0).unwrap();
        assert_ne!(moved, home);
        // Removing a replica moves only its own prefixes (consistency).
        let mut moved_keys = 0;
        for i in 0..300 {
            let k = format!("k{i:07}");
            let before = pick(&r, &idle, &k, 0).unwrap();
            let after = pick(&r, &idle[..2], &k, 0).unwrap();
            if before != after {
                assert_eq!(before, idle[2].addr, "{k} moved from a replica still there");
                moved_keys += 1;
            }
        }
        assert!(moved_keys > 0);
    }

    #[test]
    fn under_prefix_hash_no_replica_exceeds_the_bound() {
        let r = hashing(150);
        let mut loads = BTreeMap::new();
        let mut c = cands(&[0, 0, 0, 0]);
        // 400 requests of one hot prefix, none finishing.
        for _ in 0..400 {
            let a = pick(&r, &c, "hot prefix", 0).unwrap();
            *loads.entry(a).or_insert(0u32) += 1;
            for x in c.iter_mut() {
                x.load = loads.get(&x.addr).copied().unwrap_or(0);
            }
        }
        let max = loads.values().max().copied().unwrap();
        assert!(max <= 150, "mean 100, factor 150%: {loads:?}");
        // The hot prefix spills over to the next replicas on the ring.
        assert!(loads.len() >= 3, "{loads:?}");
        assert_eq!(loads.values().sum::<u32>(), 400);
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (64-bit FNV-1a).
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }
}
