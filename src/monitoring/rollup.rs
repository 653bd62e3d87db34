//! Per-minute route rollups: request and error counts and a latency
//! histogram per (minute, route). Buckets rather than samples, so memory is
//! fixed per route and rollups from several instances merge exactly.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

pub use crate::store::rollup::Agg;
pub(crate) use crate::store::rollup::RollupRow;

/// The in-memory side: minutes not yet written to the database. Hashed
/// with Fx rather than std's SipHash: two lookups per request, on keys
/// (minute, "METHOD route template") that clients cannot choose, so
/// SipHash's flooding resistance would cost a noticeable share of every
/// request for nothing.
#[derive(Default, Debug)]
pub(crate) struct RollupBuffer {
    minutes: FxHashMap<i64, FxHashMap<String, Agg>>,
}

pub(crate) fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

impl RollupBuffer {
    pub(crate) fn record(&mut self, at_ms: i64, route: &str, ms: f64, error: bool) {
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
    pub(crate) fn take_all(&mut self) -> Vec<RollupRow> {
        std::mem::take(&mut self.minutes)
            .into_iter()
            .flat_map(|(minute, routes)| {
                routes
                    .into_iter()
                    .map(move |(route, agg)| RollupRow { minute, route, agg })
            })
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
    pub(crate) fn take_all(&self) -> Vec<RollupRow> {
        let mut merged: HashMap<(i64, String), Agg> = HashMap::new();
        for shard in self.shards.all() {
            let Ok(mut buf) = shard.lock() else {
                continue;
            };
            for RollupRow { minute, route, agg } in buf.take_all() {
                merged.entry((minute, route)).or_default().merge(&agg);
            }
        }
        merged
            .into_iter()
            .map(|((minute, route), agg)| RollupRow { minute, route, agg })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        rows.sort_by_key(|r| r.minute);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].minute, rows[0].route.as_str()), (60_000, "GET /"));
        assert_eq!((rows[0].agg.requests, rows[0].agg.errors), (800, 10));
        assert_eq!(rows[0].agg.buckets.iter().sum::<u64>(), 800);
        assert_eq!(
            (rows[1].agg.requests, rows[1].route.as_str()),
            (8, "GET /x")
        );
        // taken once: what follows are new deltas
        assert!(rollups.take_all().is_empty());
        rollups.record(60_500, "GET /", 1.0, false);
        let late = rollups.take_all();
        assert_eq!((late[0].minute, late[0].agg.requests), (60_000, 1));
    }
}
