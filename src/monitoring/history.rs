//! This instance's monitoring history in memory: what has not reached the
//! database yet (pending, bounded, written by the background flush) and
//! what alert evaluation needs when the database cannot be read (recent).
//!
//! Rollups arrive as deltas (what was recorded since the last collection),
//! so writing them adds to what the database holds and reading merges the
//! unwritten part exactly: a request that lands in a minute after that
//! minute was written is counted, not lost or double counted.

use std::collections::{BTreeMap, VecDeque};

use super::rollup::Agg;

pub(crate) use crate::store::rollup::{RollupRow, SampleRow};

/// Bounds of what waits for the database. A route minute row is ~200 bytes
/// and a sample ~100: a few MB at most, hours of outage at usual rates
/// (30 routes a minute, 4 components every 10 s). Beyond them the oldest
/// go first: the newest history is what an operator looks at after an
/// outage.
pub(crate) const MAX_PENDING_ROLLUPS: usize = 20_000;
pub(crate) const MAX_PENDING_SAMPLES: usize = 20_000;
/// Bound of the recent samples kept for local evaluation, whatever the
/// sampling interval.
const MAX_RECENT_SAMPLES: usize = 20_000;

/// One component's result in a sampling round.
#[derive(Clone, Debug)]
pub(crate) struct ComponentSample {
    pub component: String,
    /// As stored: `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    pub response_ms: i64,
}

#[derive(Debug)]
pub(crate) struct LocalHistory {
    instance: String,
    /// How far back `recent_*` reaches (the longest alert window).
    keep_ms: i64,
    pending_rollups: BTreeMap<(i64, String), Agg>,
    pending_samples: VecDeque<SampleRow>,
    recent_rollups: BTreeMap<(i64, String), Agg>,
    recent_samples: VecDeque<SampleRow>,
    /// Rows dropped by the bounds, not yet reported.
    dropped: u64,
}

/// What one flush takes to write; given back with [`LocalHistory::restore`]
/// when the write fails.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Sorted by (minute, route): every writer upserts in this one order.
    pub rollups: Vec<RollupRow>,
    /// Sorted by (at, component).
    pub samples: Vec<SampleRow>,
}

impl LocalHistory {
    pub(crate) fn new(instance: String, keep_ms: i64) -> Self {
        Self {
            instance,
            keep_ms: keep_ms.max(60_000),
            pending_rollups: BTreeMap::new(),
            pending_samples: VecDeque::new(),
            recent_rollups: BTreeMap::new(),
            recent_samples: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Adds rollup deltas recorded since the last call.
    pub(crate) fn add_rollups(&mut self, deltas: Vec<RollupRow>, now: i64) {
        for RollupRow { minute, route, agg } in deltas {
            self.recent_rollups
                .entry((minute, route.clone()))
                .or_default()
                .merge(&agg);
            self.pending_rollups
                .entry((minute, route))
                .or_default()
                .merge(&agg);
        }
        self.bound_pending();
        let keep_from = now - self.keep_ms;
        while self
            .recent_rollups
            .first_key_value()
            .is_some_and(|((m, _), _)| *m < keep_from - 60_000)
        {
            self.recent_rollups.pop_first();
        }
    }

    /// Adds one sampling round.
    pub(crate) fn add_samples(&mut self, at: i64, samples: &[ComponentSample]) {
        for sample in samples {
            let row = SampleRow {
                at,
                instance: self.instance.clone(),
                component: sample.component.clone(),
                status: sample.status.clone(),
                response_time_ms: sample.response_ms,
            };
            self.recent_samples.push_back(row.clone());
            self.pending_samples.push_back(row);
        }
        self.bound_pending();
        let keep_from = at - self.keep_ms;
        while self
            .recent_samples
            .front()
            .is_some_and(|s| s.at < keep_from || self.recent_samples.len() > MAX_RECENT_SAMPLES)
        {
            self.recent_samples.pop_front();
        }
    }

    /// Takes the oldest pending rows, at most `limit` of each kind, in the
    /// order they must be written.
    pub(crate) fn take_pending(&mut self, limit: usize) -> Pending {
        let mut rollups = Vec::new();
        while rollups.len() < limit {
            let Some(((m, r), a)) = self.pending_rollups.pop_first() else {
                break;
            };
            rollups.push(RollupRow {
                minute: m,
                route: r,
                agg: a,
            });
        }
        let n = limit.min(self.pending_samples.len());
        let mut samples: Vec<SampleRow> = self.pending_samples.drain(..n).collect();
        samples.sort_by(|a, b| (a.at, &a.component).cmp(&(b.at, &b.component)));
        Pending { rollups, samples }
    }

    /// Gives back a batch whose write failed (or was not committed).
    pub(crate) fn restore(&mut self, batch: Pending) {
        self.restore_rollups(batch.rollups);
        self.restore_samples(batch.samples);
    }

    /// Gives back rows whose write failed, merged with what arrived since.
    fn restore_rollups(&mut self, rows: Vec<RollupRow>) {
        for RollupRow { minute, route, agg } in rows {
            self.pending_rollups
                .entry((minute, route))
                .or_default()
                .merge(&agg);
        }
        self.bound_pending();
    }

    fn restore_samples(&mut self, rows: Vec<SampleRow>) {
        let newer = std::mem::take(&mut self.pending_samples);
        self.pending_samples = rows.into();
        self.pending_samples.extend(newer);
        self.bound_pending();
    }

    /// Drops the oldest pending rows beyond the bounds.
    fn bound_pending(&mut self) {
        while self.pending_rollups.len() > MAX_PENDING_ROLLUPS {
            self.pending_rollups.pop_first();
            self.dropped += 1;
        }
        while self.pending_samples.len() > MAX_PENDING_SAMPLES {
            self.pending_samples.pop_front();
            self.dropped += 1;
        }
    }

    /// Unwritten rollups from minute `from` on (to merge into a read).
    pub(crate) fn pending_rollups_since(&self, from: i64) -> Vec<RollupRow> {
        self.pending_rollups
            .range((from, String::new())..)
            .map(|((m, r), a)| RollupRow {
                minute: *m,
                route: r.clone(),
                agg: a.clone(),
            })
            .collect()
    }

    /// Unwritten samples from `from` on.
    pub(crate) fn pending_samples_since(&self, from: i64) -> Vec<SampleRow> {
        self.pending_samples
            .iter()
            .filter(|s| s.at >= from)
            .cloned()
            .collect()
    }

    /// Unwritten requests and errors per minute, and the latest minute,
    /// from `from` on (this instance's share of the totals).
    pub(crate) fn pending_totals_since(&self, from: i64) -> Option<(i64, i64, i64)> {
        self.pending_rollups
            .range((from, String::new())..)
            .fold(None, |acc, ((m, _), a)| {
                let (req, err, last) = acc.unwrap_or((0, 0, *m));
                Some((req + a.requests as i64, err + a.errors as i64, last.max(*m)))
            })
    }

    /// This instance's own rollups and samples from `from` on, written or
    /// not: what local alert evaluation reads while the database is down.
    pub(crate) fn recent_since(&self, from: i64) -> (Vec<RollupRow>, Vec<SampleRow>) {
        let rollups = self
            .recent_rollups
            .range((from - from.rem_euclid(60_000), String::new())..)
            .map(|((m, r), a)| RollupRow {
                minute: *m,
                route: r.clone(),
                agg: a.clone(),
            })
            .collect();
        let samples = self
            .recent_samples
            .iter()
            .filter(|s| s.at >= from)
            .cloned()
            .collect();
        (rollups, samples)
    }

    /// Rows dropped by the bounds since the last call.
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

/// Merges rows of the same (minute, route) (from the database and from
/// memory), sorted by minute then route.
pub(crate) fn merge_rollups(a: Vec<RollupRow>, b: Vec<RollupRow>) -> Vec<RollupRow> {
    let mut merged: BTreeMap<(i64, String), Agg> = BTreeMap::new();
    for RollupRow {
        minute: m,
        route: r,
        agg,
    } in a.into_iter().chain(b)
    {
        merged.entry((m, r)).or_default().merge(&agg);
    }
    merged
        .into_iter()
        .map(|((minute, route), agg)| RollupRow { minute, route, agg })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: &str) -> ComponentSample {
        ComponentSample {
            component: "database".into(),
            status: status.into(),
            response_ms: 1,
        }
    }

    fn row(minute: i64, route: &str, agg: Agg) -> RollupRow {
        RollupRow {
            minute,
            route: route.to_owned(),
            agg,
        }
    }

    fn agg(n: u64) -> Agg {
        let mut a = Agg::default();
        for _ in 0..n {
            a.record(1.0, false);
        }
        a
    }

    #[test]
    fn deltas_add_up_and_a_failed_write_keeps_its_rows_with_the_newer_ones() {
        let mut h = LocalHistory::new("i".into(), 600_000);
        h.add_rollups(vec![row(60_000, "GET /", agg(2))], 70_000);
        let taken = h.take_pending(100);
        assert_eq!(taken.rollups.len(), 1);
        // recorded while the write was in flight
        h.add_rollups(vec![row(60_000, "GET /", agg(3))], 71_000);
        h.restore(taken);
        let again = h.take_pending(100);
        assert_eq!(again.rollups[0].agg.requests, 5);
        // nothing left once written
        assert!(h.take_pending(100).rollups.is_empty());
        // the recent view kept all of it
        assert_eq!(h.recent_since(0).0[0].agg.requests, 5);
    }

    #[test]
    fn pending_rows_come_out_in_one_fixed_order() {
        let mut h = LocalHistory::new("i".into(), 600_000);
        h.add_rollups(
            vec![
                row(120_000, "GET /b", agg(1)),
                row(60_000, "GET /z", agg(1)),
                row(120_000, "GET /a", agg(1)),
                row(60_000, "GET /a", agg(1)),
            ],
            130_000,
        );
        let first = h.take_pending(3);
        assert_eq!(first.rollups.len(), 3, "a batch is bounded");
        let rest = h.take_pending(3);
        let keys: Vec<_> = first
            .rollups
            .into_iter()
            .chain(rest.rollups)
            .map(|r| (r.minute, r.route))
            .collect();
        assert_eq!(
            keys,
            vec![
                (60_000, "GET /a".to_owned()),
                (60_000, "GET /z".to_owned()),
                (120_000, "GET /a".to_owned()),
                (120_000, "GET /b".to_owned()),
            ]
        );
    }

    #[test]
    fn the_outage_buffer_is_bounded_and_keeps_the_newest_samples() {
        let mut h = LocalHistory::new("i".into(), 600_000);
        for i in 0..(MAX_PENDING_SAMPLES as i64 + 10) {
            h.add_samples(i, &[sample("unhealthy")]);
        }
        let p = h.take_pending(usize::MAX);
        assert_eq!(p.samples.len(), MAX_PENDING_SAMPLES);
        assert_eq!(p.samples[0].at, 10, "the oldest went first");
        assert_eq!(h.take_dropped(), 10);
        h.restore(p);
        h.add_samples(1_000_000, &[sample("healthy")]);
        let p = h.take_pending(usize::MAX);
        assert_eq!(p.samples.len(), MAX_PENDING_SAMPLES);
        assert_eq!(p.samples.last().map(|s| s.at), Some(1_000_000));
    }

    #[test]
    fn recent_history_reaches_back_only_as_far_as_alerts_look() {
        let mut h = LocalHistory::new("i".into(), 120_000);
        h.add_samples(0, &[sample("healthy")]);
        h.add_samples(500_000, &[sample("unhealthy")]);
        let (_, samples) = h.recent_since(0);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].status, "unhealthy");
        assert_eq!(h.pending_totals_since(0), None);
        h.add_rollups(vec![row(480_000, "GET /", agg(4))], 500_000);
        assert_eq!(h.pending_totals_since(0), Some((4, 0, 480_000)));
    }
}
