//! How many replicas a Server's load asks for; pure.
//!
//! Each sample asks for `ceil(load / targetRequests)` replicas, clamped to
//! `[minReplicas, maxReplicas]`, where load is the requests in flight plus those held waiting
//! for a replica. Scaling up follows the newest sample at once; scaling down follows the
//! largest sample of the last `scaleDownDelaySeconds`, so a Server shrinks only after its load
//! stayed lower for the whole delay. A request held for a Server at zero asks for one replica
//! at once, whatever the target.
//!
//! A recommender starts from the replicas the Server has (`spec.replicas` survives any
//! restart of the gateway): a restart never scales down earlier than a delay after it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use substratus_crds::Autoscaling;

/// The bounds and targets of [`Autoscaling`], with its defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub min: i32,
    pub max: i32,
    pub target: i32,
    pub delay: Duration,
}

impl From<&Autoscaling> for Policy {
    fn from(a: &Autoscaling) -> Policy {
        let max = a.max_replicas.max(0);
        Policy {
            min: a.min_replicas().clamp(0, max),
            max,
            target: a.target_requests(),
            delay: Duration::from_secs(a.scale_down_delay_seconds() as u64),
        }
    }
}

impl Policy {
    /// The replicas a load asks for, within the bounds.
    pub fn desired(&self, load: u32) -> i32 {
        let want = u64::from(load).div_ceil(self.target.max(1) as u64);
        want.clamp(self.min.max(0) as u64, self.max.max(0) as u64) as i32
    }
}

/// One Server's recent samples.
#[derive(Clone, Debug)]
pub struct Recommender {
    samples: VecDeque<(Instant, i32)>,
}

impl Recommender {
    /// Starts as if the current replicas had just been asked for.
    pub fn new(now: Instant, current: i32) -> Recommender {
        Recommender {
            samples: VecDeque::from([(now, current)]),
        }
    }

    /// Records the load seen at `now` and returns the replicas to run.
    pub fn observe(&mut self, now: Instant, load: u32, policy: &Policy) -> i32 {
        let desired = policy.desired(load);
        // Samples older than the delay no longer hold replicas up.
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= policy.delay)
        {
            self.samples.pop_front();
        }
        // Samples equal or below the newest can never be the window's maximum again.
        while self.samples.back().is_some_and(|(_, d)| *d <= desired) {
            self.samples.pop_back();
        }
        self.samples.push_back((now, desired));
        let held_up = self
            .samples
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(desired);
        held_up.clamp(policy.min, policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: i32, max: i32, target: i32, delay: u64) -> Policy {
        Policy {
            min,
            max,
            target,
            delay: Duration::from_secs(delay),
        }
    }

    #[test]
    fn the_load_asks_for_replicas_of_the_target_size_within_bounds() {
        let p = policy(0, 4, 3, 60);
        assert_eq!(
            [0, 1, 3, 4, 9, 10, 100].map(|l| p.desired(l)),
            [0, 1, 1, 2, 3, 4, 4]
        );
        assert_eq!(policy(2, 4, 3, 60).desired(0), 2);
        let from_api = Policy::from(&Autoscaling {
            min_replicas: Some(0),
            max_replicas: 3,
            target_requests: None,
            scale_down_delay_seconds: Some(30),
        });
        assert_eq!(from_api, policy(0, 3, 8, 30));
        // Defaults: at least one replica, 8 in flight each, 5 minutes.
        let defaults = Policy::from(&Autoscaling {
            min_replicas: None,
            max_replicas: 2,
            target_requests: None,
            scale_down_delay_seconds: None,
        });
        assert_eq!(defaults, policy(1, 2, 8, 300));
    }

    #[test]
    fn up_at_once_down_only_after_the_delay() {
        let p = policy(0, 5, 2, 60);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = Recommender::new(t0, 0);
        // A held request at zero: one replica now.
        assert_eq!(r.observe(at(1), 1, &p), 1);
        // Load 8: four replicas now.
        assert_eq!(r.observe(at(2), 8, &p), 4);
        // Load falls to 2: four are kept for 60 s after the last sample that asked for them.
        assert_eq!(r.observe(at(3), 2, &p), 4);
        assert_eq!(r.observe(at(61), 2, &p), 4);
        assert_eq!(r.observe(at(62), 2, &p), 1);
        // Idle: zero only a delay after the last request.
        assert_eq!(r.observe(at(63), 0, &p), 1);
        assert_eq!(r.observe(at(121), 0, &p), 1);
        assert_eq!(r.observe(at(122), 0, &p), 0);
        // A spike inside the window raises the floor again.
        assert_eq!(r.observe(at(130), 3, &p), 2);
        assert_eq!(r.observe(at(131), 0, &p), 2);
        assert_eq!(r.observe(at(190), 0, &p), 0);
    }

    #[test]
    fn a_restarted_gateway_keeps_the_replicas_for_a_delay() {
        let p = policy(0, 5, 2, 60);
        let t0 = Instant::now();
        let mut r = Recommender::new(t0, 3);
        assert_eq!(r.observe(t0 + Duration::from_secs(1), 0, &p), 3);
        assert_eq!(r.observe(t0 + Duration::from_secs(59), 0, &p), 3);
        assert_eq!(r.observe(t0 + Duration::from_secs(60), 0, &p), 0);
    }

    #[test]
    fn no_delay_follows_the_load_and_the_window_stays_small() {
        let p = policy(1, 10, 1, 0);
        let t0 = Instant::now();
        let mut r = Recommender::new(t0, 1);
        for (i, load) in [5u32, 2, 7, 0].iter().enumerate() {
            let want = (*load as i32).clamp(1, 10);
            assert_eq!(
                r.observe(t0 + Duration::from_millis(i as u64 + 1), *load, &p),
                want
            );
        }
        let p = policy(0, 10, 1, 3600);
        let mut r = Recommender::new(t0, 0);
        for s in 0..10_000u64 {
            r.observe(t0 + Duration::from_secs(s), (s % 7) as u32, &p);
        }
        assert!(
            r.samples.len() <= 8,
            "a falling staircase at most: {}",
            r.samples.len()
        );
    }
}
