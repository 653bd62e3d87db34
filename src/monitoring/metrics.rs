//! Route metrics (OpenTelemetry-style names).
//!
//! Each application owns its Prometheus recorder (not the process-global
//! one), so two servers in one process — as in the test suite — never mix
//! their figures. Request metrics are recorded by the request pipeline
//! with the route *template*, never the raw path, into per-thread
//! [`Histograms`] and rollups; gauges and counters for the pool, cache,
//! circuit, retries, health and alerts are set at scrape time from the live
//! objects this server owns, so they cannot drift (nothing here goes through
//! the `metrics` macros, whose global recorder two servers would share).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use metrics::{Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::PerThread;
use super::alerts::Severity;
use super::errors::ErrorTally;
use super::histogram::Histograms;
use super::rollup::ShardedRollups;
use super::slo::{SloPolicy, SloRecorder};
use crate::cache::CacheStats;
use crate::circuit::CircuitState;
use crate::config::MonitoringSettings;
use crate::health::Status;
use crate::redis_tier::TierStatus;
use crate::store::PoolStats;

/// Label for requests that matched no route (never the raw path: that would
/// let any client create series).
pub(crate) const UNMATCHED: &str = "unmatched";

/// A request method as a metric label: the methods of RFC 9110 and PATCH as
/// they are, any other token `_OTHER` (OpenTelemetry's HTTP semantic
/// conventions). hyper accepts any token as a method; taken as sent, each
/// new one would add a series and a rollup row for good.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// Shards of per-thread state (histograms, rollups, the in-flight count):
/// more than the runtime's workers on any machine we run on (threads past
/// it share shards, which stays correct).
const SHARDS: usize = 16;

pub struct HttpMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Requests in flight, counted per thread (a request may leave on
    /// another thread than it came in: only the sum means anything), so
    /// that the two counts per request stay in the counting thread's cache.
    in_flight: PerThread<AtomicI64>,
    histograms: Histograms,
    pub rollups: ShardedRollups,
    /// SLO events per time slot and in total (`huntaze_slo_requests_total`).
    pub(crate) slo: SloRecorder,
    /// Requests refused by the in-flight limit since start.
    shed: AtomicU64,
    /// Server errors by group, unwritten, and since start by series.
    pub errors: ErrorTally,
}

/// What `/metrics` shows beside the request metrics: read by the edge from
/// the live objects at scrape time, so the figures cannot drift from them.
pub struct MetricsInputs {
    /// The database system (`db_system` label).
    pub db_system: &'static str,
    pub pool: PoolStats,
    pub retries: Vec<OperationRetries>,
    /// The query cache's figures, when it is on.
    pub query_cache: Option<CacheStats>,
    /// Each dependency behind a circuit breaker.
    pub circuits: Vec<CircuitFigures>,
    /// The latest health sample of each component.
    pub components: Vec<ComponentStatus>,
    pub alerts_firing: Vec<FiringCount>,
    /// Instances the forecast rate needs in the next 15 minutes, when the
    /// forecast could be made.
    pub predicted_instances: Option<f64>,
    /// The Redis tier, when configured.
    pub redis: Option<TierStatus>,
    /// When the served certificate expires (Unix seconds), when this
    /// server speaks HTTPS itself.
    pub certificate_not_after: Option<i64>,
}

pub(crate) use crate::retry::OperationRetries;

/// One circuit breaker's state and transitions into each state since start.
#[derive(Clone, Debug)]
pub struct CircuitFigures {
    pub name: &'static str,
    pub state: CircuitState,
    pub transitions: [(CircuitState, u64); 3],
}

/// One component's latest health.
#[derive(Clone, Debug)]
pub struct ComponentStatus {
    pub name: String,
    pub status: Status,
}

/// Alerts firing at one severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FiringCount {
    pub severity: Severity,
    pub count: u64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    /// With the default SLO settings.
    pub fn new() -> Self {
        Self::for_settings(&MonitoringSettings::default())
    }

    /// With the SLO objectives and windows of `settings`.
    pub fn for_settings(settings: &MonitoringSettings) -> Self {
        // Gauges and counters only, set at scrape time: the request
        // histogram is ours (`histogram.rs`).
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Self {
            recorder,
            handle,
            in_flight: PerThread::new(SHARDS),
            histograms: Histograms::new(SHARDS),
            rollups: ShardedRollups::new(SHARDS),
            slo: SloRecorder::new(SloPolicy::from_config(settings), SHARDS),
            shed: AtomicU64::new(0),
            errors: ErrorTally::default(),
        }
    }

    /// Counts one request refused by the in-flight limit.
    pub fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests refused by the in-flight limit since start.
    pub fn shed_total(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    fn describe(&self) {
        let r = &self.recorder;
        for (name, help) in [
            ("http_server_active_requests", "HTTP requests being served."),
            (
                "http_server_requests_shed_total",
                "Requests refused with 503 by the in-flight limit.",
            ),
            (
                "db_client_connections_usage",
                "Pooled database connections by state (idle, used).",
            ),
            (
                "db_client_connections_max",
                "Largest allowed database pool.",
            ),
            (
                "db_client_connections_pending_requests",
                "Callers waiting for a pooled connection.",
            ),
            (
                "retries_total",
                "Retries of transient failures by operation (database reads, TikTok calls).",
            ),
            (
                "circuit_breaker_transitions_total",
                "Circuit state changes per dependency, by the state entered.",
            ),
            (
                "cache_requests_total",
                "Query cache lookups by result (hit, miss, stale).",
            ),
            (
                "cache_evictions_total",
                "Query cache entries evicted for capacity.",
            ),
            ("cache_entries", "Query cache entries."),
            (
                "circuit_breaker_state",
                "Circuit state per dependency: 0 closed, 1 half-open, 2 open.",
            ),
            (
                "health_component_status",
                "Latest health per component: 0 healthy, 1 degraded, 2 unhealthy.",
            ),
            ("alerts_firing", "Alerts firing, by severity."),
            (
                "huntaze_redis_shared_mode",
                "1 while Redis is used (shared limits and caches), 0 in local fallback.",
            ),
            (
                "huntaze_redis_fallbacks_total",
                "Operations that fell back to local behaviour because Redis was down.",
            ),
            (
                "huntaze_errors_total",
                "Server errors (5xx and caught panics; shed 503s excluded) by route, method, status and cause kind.",
            ),
            (
                "huntaze_predicted_instances",
                "Instances the forecast request rate needs (next 15 minutes).",
            ),
            (
                "huntaze_tls_certificate_expiry_timestamp_seconds",
                "When the certificate the HTTPS listener serves expires (notAfter), in Unix seconds.",
            ),
        ] {
            r.describe_gauge(name.into(), None, help.into());
        }
        r.describe_counter(
            "huntaze_slo_requests_total".into(),
            None,
            "Requests to non-probe routes per SLO (availability: bad when 5xx; latency: bad when slower than HUNTAZE_SLO_LATENCY_MS), by result (good, bad).".into(),
        );
    }

    /// Records one finished request (`method` from [`method_label`]) that
    /// took `seconds` and started at `at_ms` (epoch ms: its rollup minute).
    pub fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64, at_ms: i64) {
        self.slo.record(route, status, seconds, at_ms);
        self.histograms
            .record(route, method, status, seconds, |rollup_key| {
                self.rollups
                    .record(at_ms, rollup_key, seconds * 1000.0, status >= 500)
            });
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        let key = Key::from_parts(
            name,
            labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect::<Vec<_>>(),
        );
        let meta =
            metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        self.recorder.register_gauge(&key, &meta).set(value);
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, String)], value: u64) {
        let key = Key::from_parts(
            name,
            labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect::<Vec<_>>(),
        );
        let meta =
            metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        self.recorder.register_counter(&key, &meta).absolute(value);
    }

    /// Prometheus text exposition, with the scrape-time gauges refreshed.
    pub fn render(&self, inputs: &MetricsInputs) -> String {
        self.describe();
        self.gauge(
            "http_server_active_requests",
            &[],
            self.in_flight().max(0) as f64,
        );
        self.counter("http_server_requests_shed_total", &[], self.shed_total());
        let pool = &inputs.pool;
        let backend = inputs.db_system.to_owned();
        self.gauge(
            "db_client_connections_usage",
            &[("state", "idle".into()), ("db_system", backend.clone())],
            pool.idle as f64,
        );
        self.gauge(
            "db_client_connections_usage",
            &[("state", "used".into()), ("db_system", backend.clone())],
            pool.in_use as f64,
        );
        self.gauge(
            "db_client_connections_max",
            &[("db_system", backend.clone())],
            pool.max as f64,
        );
        self.gauge(
            "db_client_connections_pending_requests",
            &[("db_system", backend)],
            pool.waiting as f64,
        );
        for r in &inputs.retries {
            self.counter(
                "retries_total",
                &[("operation", r.operation.into())],
                r.count,
            );
        }
        if let Some(c) = &inputs.query_cache {
            let cache = || ("cache", "sessions".to_owned());
            self.counter(
                "cache_requests_total",
                &[cache(), ("result", "hit".into())],
                c.hits,
            );
            self.counter(
                "cache_requests_total",
                &[cache(), ("result", "miss".into())],
                c.misses,
            );
            self.counter(
                "cache_requests_total",
                &[cache(), ("result", "stale".into())],
                c.stale_served,
            );
            self.counter("cache_evictions_total", &[cache()], c.evictions);
            self.gauge("cache_entries", &[cache()], c.entries as f64);
        }
        for circuit in &inputs.circuits {
            self.gauge(
                "circuit_breaker_state",
                &[("circuit", circuit.name.into())],
                circuit.state.as_gauge(),
            );
        }
        for circuit in &inputs.circuits {
            for (to, n) in circuit.transitions {
                self.counter(
                    "circuit_breaker_transitions_total",
                    &[("circuit", circuit.name.into()), ("to", to.as_str().into())],
                    n,
                );
            }
        }
        for c in &inputs.components {
            let v = match c.status {
                Status::Healthy => 0.0,
                Status::Degraded => 1.0,
                Status::Unhealthy => 2.0,
            };
            self.gauge(
                "health_component_status",
                &[("component", c.name.clone())],
                v,
            );
        }
        for severity in Severity::ALL {
            let n = inputs
                .alerts_firing
                .iter()
                .find(|f| f.severity == severity)
                .map_or(0, |f| f.count);
            self.gauge(
                "alerts_firing",
                &[("severity", severity.as_str().into())],
                n as f64,
            );
        }
        for ((route, method, status, cause), n) in self.errors.totals() {
            self.counter(
                "huntaze_errors_total",
                &[
                    ("http_route", route),
                    ("http_request_method", method),
                    ("http_response_status_code", status.to_string()),
                    ("cause", cause),
                ],
                n,
            );
        }
        if let Some(p) = inputs.predicted_instances {
            self.gauge("huntaze_predicted_instances", &[], p);
        }
        if let Some(t) = &inputs.redis {
            self.gauge("huntaze_redis_shared_mode", &[], f64::from(u8::from(t.up)));
            self.counter("huntaze_redis_fallbacks_total", &[], t.fallbacks);
        }
        if let Some(not_after) = inputs.certificate_not_after {
            self.gauge(
                "huntaze_tls_certificate_expiry_timestamp_seconds",
                &[],
                not_after as f64,
            );
        }
        let slo = self.slo.totals();
        for (name, bad) in [("availability", slo.errors), ("latency", slo.slow)] {
            for (result, n) in [("good", slo.requests - bad), ("bad", bad)] {
                self.counter(
                    "huntaze_slo_requests_total",
                    &[("slo", name.into()), ("result", result.into())],
                    n,
                );
            }
        }
        let mut text = self.handle.render();
        self.histograms.render(&mut text);
        text
    }
}

impl HttpMetrics {
    /// Requests being served right now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight
            .all()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a request in flight (the request pipeline calls this for
    /// every request, metrics on or off), until its [`leave`](Self::leave).
    /// The pipeline pairs the two in its future's drop, so a request whose
    /// client goes away is counted out too. Either may run on any thread:
    /// only the sum over the threads means anything.
    pub fn enter(&self) {
        self.in_flight.mine().fetch_add(1, Ordering::Relaxed);
    }

    /// Counts out a request [`enter`](Self::enter) counted.
    pub fn leave(&self) {
        self.in_flight.mine().fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time_fmt::now_ms;

    /// Requests are added to fixed buckets, not kept as samples: memory
    /// must not grow with traffic while nobody scrapes `/metrics`, and a
    /// scrape still shows every request, one entry per series.
    #[test]
    fn requests_are_counted_in_their_series_not_kept() {
        let m = HttpMetrics::new();
        for i in 0..150_000u32 {
            m.record(
                "/",
                "GET",
                if i % 7 == 0 { 404 } else { 200 },
                0.001,
                now_ms(),
            );
        }
        let snap = m.histograms.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.values().map(|c| c.count).sum::<u64>(), 150_000);
        assert_eq!(snap[&("/".to_owned(), "GET", 404)].count, 21_429);
        let mut text = String::new();
        m.histograms.render(&mut text);
        assert!(text.contains(
            "http_server_request_duration_seconds_count{http_route=\"/\",http_request_method=\"GET\",http_response_status_code=\"404\"} 21429"
        ));
    }

    fn inputs() -> MetricsInputs {
        MetricsInputs {
            db_system: "sqlite",
            pool: PoolStats {
                size: 1,
                idle: 1,
                in_use: 0,
                waiting: 0,
                max: 4,
            },
            retries: Vec::new(),
            query_cache: None,
            circuits: Vec::new(),
            components: Vec::new(),
            alerts_firing: vec![FiringCount {
                severity: Severity::High,
                count: 2,
            }],
            predicted_instances: None,
            redis: None,
            certificate_not_after: None,
        }
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    #[test]
    fn two_servers_in_one_process_never_mix_their_figures() {
        let (a, b) = (HttpMetrics::new(), HttpMetrics::new());
        a.count_shed();
        a.count_shed();
        a.enter();
        let (ra, rb) = (a.render(&inputs()), b.render(&inputs()));
        assert_eq!(
            line(&ra, "http_server_requests_shed_total "),
            Some("http_server_requests_shed_total 2")
        );
        assert_eq!(
            line(&rb, "http_server_requests_shed_total "),
            Some("http_server_requests_shed_total 0")
        );
        assert_eq!(
            line(&rb, "http_server_active_requests "),
            Some("http_server_active_requests 0")
        );
        assert_eq!(
            line(&ra, "alerts_firing{severity=\"high\"}"),
            Some("alerts_firing{severity=\"high\"} 2")
        );
        assert_eq!(
            line(&ra, "alerts_firing{severity=\"low\"}"),
            Some("alerts_firing{severity=\"low\"} 0")
        );
    }

    #[test]
    fn the_certificate_expiry_is_exact_and_absent_without_tls() {
        let m = HttpMetrics::new();
        let text = m.render(&inputs());
        assert!(
            !text.contains("huntaze_tls_certificate_expiry_timestamp_seconds"),
            "{text}"
        );
        let with_tls = MetricsInputs {
            certificate_not_after: Some(1_767_225_600),
            ..inputs()
        };
        let text = m.render(&with_tls);
        assert_eq!(
            line(&text, "huntaze_tls_certificate_expiry_timestamp_seconds "),
            Some("huntaze_tls_certificate_expiry_timestamp_seconds 1767225600")
        );
        assert!(text.contains("# TYPE huntaze_tls_certificate_expiry_timestamp_seconds gauge"));
    }

    #[test]
    fn in_flight_adds_up_across_threads() {
        let m = HttpMetrics::new();
        m.enter();
        std::thread::scope(|s| {
            s.spawn(|| {
                m.enter();
                assert_eq!(m.in_flight(), 2);
                m.leave();
            });
        });
        assert_eq!(m.in_flight(), 1);
        // A request may finish on another thread than it started on.
        std::thread::scope(|s| {
            s.spawn(|| m.leave());
        });
        assert_eq!(m.in_flight(), 0);
    }
}
