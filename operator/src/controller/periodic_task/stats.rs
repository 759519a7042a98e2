//! Counters and a fine-grained push-lateness histogram of the engine, readable in-process
//! (the benchmark, tests) and mirrored into the Prometheus metrics when those are given.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Histogram resolution and range: 50 µs buckets up to 2 s; later pushes count in the last
/// bucket, the maximum is kept exactly.
const BUCKET_US: u64 = 50;
const BUCKETS: usize = 40_000;

#[derive(Default)]
pub struct Stats {
    pushes: AtomicU64,
    duplicates: AtomicU64,
    failures: AtomicU64,
    skipped: AtomicU64,
    lateness: Mutex<Lateness>,
}

struct Lateness {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            max_us: 0,
        }
    }
}

/// A point-in-time copy of the stats.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub pushes: u64,
    pub duplicates: u64,
    pub failures: u64,
    pub skipped: u64,
    pub samples: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn pushed(&self, lateness: Duration) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(lateness.as_micros()).unwrap_or(u64::MAX);
        let idx = usize::try_from(us / BUCKET_US)
            .unwrap_or(BUCKETS - 1)
            .min(BUCKETS - 1);
        if let Ok(mut l) = self.lateness.lock() {
            l.buckets[idx] += 1;
            l.count += 1;
            l.max_us = l.max_us.max(us);
        }
    }

    /// A push that belongs to no slot (run-now): counted, not timed.
    pub fn pushed_unscheduled(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }

    /// Forgets everything (e.g. after a benchmark's warm-up).
    pub fn reset(&self) {
        for c in [
            &self.pushes,
            &self.duplicates,
            &self.failures,
            &self.skipped,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        if let Ok(mut l) = self.lateness.lock() {
            *l = Lateness::default();
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            pushes: self.pushes.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            ..Default::default()
        };
        if let Ok(l) = self.lateness.lock() {
            s.samples = l.count;
            s.p50 = quantile(&l, 0.50);
            s.p99 = quantile(&l, 0.99);
            s.max = Duration::from_micros(l.max_us);
        }
        s
    }
}

/// Upper bound of the bucket holding the q-quantile (never above the exact maximum).
fn quantile(l: &Lateness, q: f64) -> Duration {
    if l.count == 0 {
        return Duration::ZERO;
    }
    let rank = ((l.count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in l.buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let upper = (i as u64 + 1) * BUCKET_US;
            return Duration::from_micros(upper.min(l.max_us));
        }
    }
    Duration::from_micros(l.max_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets_and_max_is_exact() {
        let s = Stats::default();
        for ms in 1..=100u64 {
            s.pushed(Duration::from_micros(ms * 1000 - 10));
        }
        s.duplicate();
        let snap = s.snapshot();
        assert_eq!(snap.pushes, 100);
        assert_eq!(snap.duplicates, 1);
        assert_eq!(snap.p50, Duration::from_micros(50_000));
        assert_eq!(snap.p99, Duration::from_micros(99_000));
        assert_eq!(snap.max, Duration::from_micros(99_990));
        s.reset();
        assert_eq!(s.snapshot().samples, 0);
    }
}
