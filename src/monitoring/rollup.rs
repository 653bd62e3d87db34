//! Per-minute route rollups: request and error counts and a latency
//! histogram per (minute, route). Buckets rather than samples, so memory is
//! fixed per route and rollups from several instances merge exactly.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

/// Upper bounds (ms) of the latency buckets; the last bucket is open.
pub const BOUNDS_MS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
    30_000.0,
];
pub const BUCKETS: usize = BOUNDS_MS.len() + 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agg {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<u64>,
}

impl Agg {
    pub fn record(&mut self, ms: f64, error: bool) {
        if self.buckets.len() != BUCKETS {
            self.buckets = vec![0; BUCKETS];
        }
        self.requests += 1;
        if error {
            self.errors += 1;
        }
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        self.buckets[i] += 1;
    }

    pub fn merge(&mut self, other: &Agg) {
        if self.buckets.len() != BUCKETS {
            self.buckets = vec![0; BUCKETS];
        }
        self.requests += other.requests;
        self.errors += other.errors;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
    }

    /// The q-quantile in ms, interpolated linearly inside its bucket
    /// (Prometheus' `histogram_quantile` rule). None without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            if *n > 0 && (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { BOUNDS_MS[i - 1] };
                let upper = BOUNDS_MS.get(i).copied().unwrap_or(lower);
                let within = (rank - seen as f64) / *n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            seen += n;
        }
        Some(*BOUNDS_MS.last().unwrap_or(&0.0))
    }

    pub fn buckets_json(&self) -> String {
        serde_json::to_string(&self.buckets).unwrap_or_else(|_| "[]".into())
    }

    pub fn from_parts(requests: u64, errors: u64, buckets_json: &str) -> Self {
        let mut buckets: Vec<u64> = serde_json::from_str(buckets_json).unwrap_or_default();
        buckets.resize(BUCKETS, 0);
        Self {
            requests,
            errors,
            buckets,
        }
    }
}

/// The in-memory side: minutes not yet written to the database. Hashed
/// with Fx rather than std's SipHash: two lookups per request, on keys
/// (minute, "METHOD route template") that clients cannot choose, so
/// SipHash's flooding resistance would cost a noticeable share of every
/// request for nothing.
#[derive(Default, Debug)]
pub struct RollupBuffer {
    minutes: FxHashMap<i64, FxHashMap<String, Agg>>,
}

pub fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

impl RollupBuffer {
    pub fn record(&mut self, at_ms: i64, route: &str, ms: f64, error: bool) {
        let minute = self.minutes.entry(minute_of(at_ms)).or_default();
        match minute.get_mut(route) {
            Some(agg) => agg.record(ms, error),
            None => {
                let mut agg = Agg::default();
                agg.record(ms, error);
                minute.insert(route.to_owned(), agg);
            }
        }
    }

    /// Everything recorded since the last call (deltas: the caller adds
    /// them up), leaving the buffer empty.
    pub fn take_all(&mut self) -> Vec<(i64, String, Agg)> {
        std::mem::take(&mut self.minutes)
            .into_iter()
            .flat_map(|(m, routes)| routes.into_iter().map(move |(r, a)| (m, r, a)))
            .collect()
    }
}

/// [`RollupBuffer`] in shards, one per recording thread (by a thread-local
/// index, round robin), so the runtime's workers do not take turns on one
/// lock per request (one shared mutex makes them wait on each other, in
/// the kernel, under load). A flush merges the shards; each minute/route
/// aggregate adds up exactly.
pub struct ShardedRollups {
    shards: super::PerThread<std::sync::Mutex<RollupBuffer>>,
}

impl ShardedRollups {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: super::PerThread::new(shards),
        }
    }

    pub fn record(&self, at_ms: i64, route: &str, ms: f64, error: bool) {
        if let Ok(mut buf) = self.shards.mine().lock() {
            buf.record(at_ms, route, ms, error);
        }
    }

    /// [`RollupBuffer::take_all`] over every shard, merged per (minute,
    /// route).
    pub fn take_all(&self) -> Vec<(i64, String, Agg)> {
        let mut merged: HashMap<(i64, String), Agg> = HashMap::new();
        for shard in self.shards.all() {
            let Ok(mut buf) = shard.lock() else {
                continue;
            };
            for (minute, route, agg) in buf.take_all() {
                merged.entry((minute, route)).or_default().merge(&agg);
            }
        }
        merged
            .into_iter()
            .map(|((minute, route), agg)| (minute, route, agg))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut a = Agg::default();
        for _ in 0..90 {
            a.record(0.5, false);
        }
        for _ in 0..10 {
            a.record(200.0, true);
        }
        assert_eq!((a.requests, a.errors), (100, 10));
        assert!(a.quantile(0.5).unwrap() <= 1.0);
        let p95 = a.quantile(0.95).unwrap();
        assert!((100.0..=250.0).contains(&p95), "{p95}");
        assert_eq!(Agg::default().quantile(0.5), None);
    }

    #[test]
    fn rollups_from_two_instances_merge_exactly() {
        let mut a = Agg::default();
        let mut b = Agg::default();
        a.record(3.0, false);
        b.record(3.0, true);
        b.record(700.0, false);
        let mut m = Agg::from_parts(a.requests, a.errors, &a.buckets_json());
        m.merge(&b);
        assert_eq!(
            (m.requests, m.errors, m.buckets.iter().sum::<u64>()),
            (3, 1, 3)
        );
    }

    #[test]
    fn shards_recorded_from_many_threads_add_up_per_minute_and_route() {
        let rollups = std::sync::Arc::new(ShardedRollups::new(4));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let rollups = std::sync::Arc::clone(&rollups);
                std::thread::spawn(move || {
                    for i in 0..100 {
                        rollups.record(60_000 + i, "GET /", 1.0, t == 0 && i < 10);
                    }
                    rollups.record(130_000, "GET /x", 1.0, false);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut rows = rollups.take_all();
        rows.sort_by_key(|r| r.0);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].0, rows[0].1.as_str()), (60_000, "GET /"));
        assert_eq!((rows[0].2.requests, rows[0].2.errors), (800, 10));
        assert_eq!(rows[0].2.buckets.iter().sum::<u64>(), 800);
        assert_eq!((rows[1].2.requests, rows[1].1.as_str()), (8, "GET /x"));
        // taken once: what follows are new deltas
        assert!(rollups.take_all().is_empty());
        rollups.record(60_500, "GET /", 1.0, false);
        let late = rollups.take_all();
        assert_eq!((late[0].0, late[0].2.requests), (60_000, 1));
    }
}
