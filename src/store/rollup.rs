//! The rollup aggregate the monitoring history stores: request and error
//! counts and a latency histogram. It lives with the store, which reads,
//! merges and writes it in one transaction, so the store needs nothing
//! from the monitoring service that uses it. Buckets rather than samples,
//! so memory is fixed per route and rollups from several instances merge
//! exactly.

/// Upper bounds (ms) of the latency buckets; the last bucket is open.
pub(crate) const BOUNDS_MS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
    30_000.0,
];
pub(crate) const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// One route's aggregate over one minute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollupRow {
    /// Start of the minute, epoch ms.
    pub minute: i64,
    pub route: String,
    pub agg: Agg,
}

/// One health sample of one component on one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleRow {
    /// Epoch ms.
    pub at: i64,
    pub instance: String,
    pub component: String,
    pub status: String,
    pub response_time_ms: i64,
}

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
}
