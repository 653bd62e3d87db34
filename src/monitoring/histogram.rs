//! The request-duration histogram (`http_server_request_duration_seconds`),
//! kept per recording thread and merged when `/metrics` is scraped.
//!
//! Written here rather than recorded into metrics-exporter-prometheus'
//! histogram, which every request of every worker pushed into (a shared
//! lock-free list of raw samples, drained into buckets later) behind a
//! shared series map: under load the workers bounced those cache lines
//! between cores on every request, and the landing page served ~8 % more
//! requests per second with metrics off. Here a request touches
//! its own thread's shard only (a mutex nobody else takes but a scrape)
//! and adds to fixed buckets, so memory grows with the series, never with
//! the samples. The exposition is Prometheus' text format, as before.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use rustc_hash::FxHashMap;

use super::PerThread;

pub(crate) const NAME: &str = "http_server_request_duration_seconds";
const HELP: &str = "Duration of HTTP server requests.";

/// Upper bounds of the buckets, in seconds (`+Inf` is the count).
pub(crate) const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One series' figures: per-bucket (not cumulative) counts, count and sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Counts {
    buckets: [u64; BOUNDS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Counts {
    fn record(&mut self, seconds: f64) {
        if let Some(i) = BOUNDS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn merge(&mut self, other: &Counts) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

struct Series {
    method: &'static str,
    status: u16,
    /// `METHOD route`, the rollups' key, made once with the series.
    rollup_key: String,
    counts: Counts,
}

/// Series by route template (not client input: Fx-hashed), then a short
/// scan by method and status; a series' first request allocates it.
type Shard = FxHashMap<String, Vec<Series>>;

pub(crate) struct Histograms {
    shards: PerThread<Mutex<Shard>>,
}

impl Histograms {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: PerThread::new(shards),
        }
    }

    /// Records one request in this thread's shard and hands `then` the
    /// series' rollup key (`METHOD route`).
    pub(crate) fn record(
        &self,
        route: &str,
        method: &'static str,
        status: u16,
        seconds: f64,
        then: impl FnOnce(&str),
    ) {
        let Ok(mut shard) = self.shards.mine().lock() else {
            return;
        };
        let series = match shard.get_mut(route) {
            Some(v) => v,
            None => shard.entry(route.to_owned()).or_default(),
        };
        let i = match series
            .iter()
            .position(|s| s.status == status && s.method == method)
        {
            Some(i) => i,
            None => {
                series.push(Series {
                    method,
                    status,
                    rollup_key: format!("{method} {route}"),
                    counts: Counts::default(),
                });
                series.len() - 1
            }
        };
        series[i].counts.record(seconds);
        then(&series[i].rollup_key);
    }

    /// Every series, merged over the shards, by (route, method, status).
    pub(crate) fn snapshot(&self) -> BTreeMap<(String, &'static str, u16), Counts> {
        let mut merged: BTreeMap<(String, &'static str, u16), Counts> = BTreeMap::new();
        for shard in self.shards.all() {
            let Ok(shard) = shard.lock() else { continue };
            for (route, series) in shard.iter() {
                for s in series {
                    merged
                        .entry((route.clone(), s.method, s.status))
                        .or_default()
                        .merge(&s.counts);
                }
            }
        }
        merged
    }

    /// Appends the histogram in Prometheus' text exposition format.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {NAME} {HELP}");
        let _ = writeln!(out, "# TYPE {NAME} histogram");
        for ((route, method, status), c) in self.snapshot() {
            let labels = format!(
                "http_route=\"{}\",http_request_method=\"{}\",http_response_status_code=\"{status}\"",
                escape(&route),
                escape(method),
            );
            let mut cumulative = 0;
            for (bound, n) in BOUNDS.iter().zip(c.buckets) {
                cumulative += n;
                let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"+Inf\"}} {}", c.count);
            let _ = writeln!(out, "{NAME}_sum{{{labels}}} {}", c.sum);
            let _ = writeln!(out, "{NAME}_count{{{labels}}} {}", c.count);
        }
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_cumulative_buckets() {
        let h = Histograms::new(4);
        let mut keys = Vec::new();
        h.record("/", "GET", 200, 0.0004, |k| keys.push(k.to_owned()));
        h.record("/", "GET", 200, 0.003, |_| {});
        h.record("/", "GET", 200, 30.0, |_| {});
        h.record("/", "GET", 404, 0.001, |_| {});
        // Another thread records into another shard; the scrape adds up.
        std::thread::scope(|s| {
            s.spawn(|| h.record("/", "GET", 200, 0.003, |_| {}));
        });
        assert_eq!(keys, ["GET /"]);
        let snap = h.snapshot();
        let ok = &snap[&("/".to_owned(), "GET", 200)];
        assert_eq!(ok.count, 4);
        assert!((ok.sum - 30.0064).abs() < 1e-9, "{}", ok.sum);
        assert_eq!(snap[&("/".to_owned(), "GET", 404)].count, 1);

        let mut text = String::new();
        h.render(&mut text);
        let line = |le: &str| {
            let prefix = format!(
                "{NAME}_bucket{{http_route=\"/\",http_request_method=\"GET\",http_response_status_code=\"200\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map(str::to_owned)
        };
        assert_eq!(line("0.0005").as_deref(), Some("1"));
        assert_eq!(line("0.001").as_deref(), Some("1"));
        assert_eq!(line("0.005").as_deref(), Some("3"));
        assert_eq!(line("10").as_deref(), Some("3"));
        assert_eq!(line("+Inf").as_deref(), Some("4"));
        assert!(text.contains(&format!("# TYPE {NAME} histogram")));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("/a"), "/a");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
