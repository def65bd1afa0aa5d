//! Loopback ports for servers that start later, in another process.
//!
//! A port the kernel hands out for `127.0.0.1:0` comes from the ephemeral range
//! (`net.ipv4.ip_local_port_range`), the same range it draws from for the local end of every
//! outgoing connection. Between choosing such a port and the server binding it, the API
//! server's own connections to etcd can take it ("address already in use"). So ports are
//! chosen below the ephemeral range, where the kernel never assigns one by itself, and each
//! is checked free by binding it once.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Result, bail};

/// Lowest port handed out: above the well-known and common registered server ports.
const FLOOR: u16 = 20_000;

/// The ephemeral range the kernel uses, from `/proc`; Linux's default when unreadable.
fn ephemeral_range() -> (u16, u16) {
    parse_range(
        &std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default(),
    )
    .unwrap_or((32_768, 60_999))
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(|s| s.parse::<u16>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    (lo <= hi).then_some((lo, hi))
}

/// The ports to choose from: below the ephemeral range if there is room there, else above it.
fn pool((lo, hi): (u16, u16)) -> (u16, u16) {
    if lo > FLOOR + 1_000 {
        (FLOOR, lo - 1)
    } else {
        (hi.saturating_add(1).max(FLOOR), u16::MAX)
    }
}

/// The `n`th candidate of a pool: consecutive calls walk the pool from a start that differs
/// from process to process, so concurrent test binaries rarely try the same ports.
fn candidate((first, last): (u16, u16), start: u32, n: u32) -> u16 {
    let size = u32::from(last - first) + 1;
    first + ((start.wrapping_add(n)) % size) as u16
}

/// A loopback port that is free now and outside the kernel's ephemeral range.
pub fn free_loopback_port() -> Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread processes apart: the pid times a large odd number scatters neighbours.
    search(
        pool(ephemeral_range()),
        std::process::id().wrapping_mul(7_919),
        &NEXT,
    )
}

/// The first candidate from `next` on that binds.
fn search(pool: (u16, u16), start: u32, next: &AtomicU32) -> Result<u16> {
    for _ in 0..1_000 {
        let port = candidate(pool, start, next.fetch_add(1, Ordering::Relaxed));
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!(
        "no free loopback port in {}..={} after 1000 tries",
        pool.0,
        pool.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_range_is_read_and_odd_text_falls_back() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_range("1024 65535"), Some((1_024, 65_535)));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("x"), None);
        assert_eq!(parse_range(""), None);
    }

    #[test]
    fn the_pool_avoids_the_ephemeral_range() {
        assert_eq!(pool((32_768, 60_999)), (20_000, 32_767));
        // A range that starts low leaves room only above it.
        assert_eq!(pool((1_024, 50_000)), (50_001, 65_535));
        assert_eq!(pool((1_024, 10_000)), (20_000, 65_535));
    }

    #[test]
    fn candidates_stay_in_the_pool_and_wrap() {
        let p = (20_000, 20_009);
        let seen: Vec<u16> = (0..12).map(|n| candidate(p, 7, n)).collect();
        assert_eq!(seen[0], 20_007);
        assert_eq!(seen[3], 20_000);
        assert!(seen.iter().all(|&x| (20_000..=20_009).contains(&x)));
        assert_eq!(seen[10], seen[0]);
        assert_eq!(
            candidate(p, u32::MAX, 1),
            20_000 + (u32::MAX.wrapping_add(1) % 10) as u16
        );
    }

    #[test]
    fn a_port_handed_out_is_bindable_and_outside_the_kernel_range() {
        let (lo, hi) = ephemeral_range();
        for _ in 0..20 {
            let port = free_loopback_port().unwrap();
            assert!(!(lo..=hi).contains(&port), "{port} is in {lo}..={hi}");
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }

    #[test]
    fn a_port_held_by_a_listener_is_skipped() {
        let pool = pool(ephemeral_range());
        let start = 4_242;
        // Hold the first candidate (if something else holds it already, so much the better).
        let _held = TcpListener::bind(("127.0.0.1", candidate(pool, start, 0)));
        let next = AtomicU32::new(0);
        let port = search(pool, start, &next).unwrap();
        assert_ne!(port, candidate(pool, start, 0));
        assert!(next.load(Ordering::Relaxed) >= 2);
    }
}
