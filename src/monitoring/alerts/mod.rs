//! Alerting: rules over the shared history, a pending → firing → resolved
//! lifecycle stored in the database (or, while the database is unreachable,
//! in this instance's memory: [`LocalAlerts`]), and notifications (always
//! the log; a signed webhook when configured) sent by a background worker,
//! never on a request path.
//!
//! Rules (thresholds from configuration):
//! - `route_5xx` (high): a critical route's 5xx rate over the window;
//! - `route_latency` (medium): a route's p95 over the window;
//! - `component_unhealthy` (high for database/config, else medium): the last
//!   N samples of a component all unhealthy;
//! - `component_degraded` (low): not healthy for the whole degraded window;
//! - `circuit_open` (medium): a dependency's circuit breaker is open;
//! - `new_error` (medium): an error group the database created within the
//!   alert window (`monitoring::errors`).
//! - `slo_availability_page`, `slo_latency_page` (high) and
//!   `slo_availability_ticket`, `slo_latency_ticket` (medium): an SLO's
//!   error budget burning too fast over two windows (`super::slo`).

mod book;
mod notifier;

use std::collections::{HashMap, HashSet};

pub(crate) use book::{AlertState, LocalAlerts, Notification, advance};
pub(crate) use notifier::Notifier;
pub use notifier::signature;

use super::history::{RollupRow, SampleRow};
use super::rollup::Agg;
use crate::config::MonitoringSettings;
use crate::health::Status;

/// How urgent an alert is; stored and sent as [`as_str`](Self::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    /// Every severity, in the order the metric lists them.
    pub const ALL: [Severity; 3] = [Severity::Low, Severity::Medium, Severity::High];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// The severity a stored alert names (None for a name this version
    /// does not know).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The rule a condition comes from; stored as [`as_str`](Self::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    Route5xx,
    RouteLatency,
    ComponentUnhealthy,
    ComponentDegraded,
    CircuitOpen,
    NewError,
    SloAvailabilityPage,
    SloAvailabilityTicket,
    SloLatencyPage,
    SloLatencyTicket,
}

impl Rule {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rule::Route5xx => "route_5xx",
            Rule::RouteLatency => "route_latency",
            Rule::ComponentUnhealthy => "component_unhealthy",
            Rule::ComponentDegraded => "component_degraded",
            Rule::CircuitOpen => "circuit_open",
            Rule::NewError => "new_error",
            Rule::SloAvailabilityPage => "slo_availability_page",
            Rule::SloAvailabilityTicket => "slo_availability_ticket",
            Rule::SloLatencyPage => "slo_latency_page",
            Rule::SloLatencyTicket => "slo_latency_ticket",
        }
    }
}

/// A rule's condition that holds now, for one route, component or circuit
/// (its `key`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Condition {
    pub rule: Rule,
    pub key: String,
    pub severity: Severity,
    pub summary: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Thresholds {
    pub window_ms: i64,
    pub min_requests: u64,
    pub error_rate: f64,
    pub p95_ms: f64,
    pub unhealthy_samples: usize,
    pub degraded_ms: i64,
    pub for_ms: i64,
    pub repeat_ms: i64,
}

impl Thresholds {
    pub(crate) fn from_config(c: &MonitoringSettings) -> Self {
        Self {
            window_ms: c.alert_window_ms as i64,
            min_requests: c.alert_min_requests,
            error_rate: c.alert_error_rate_percent / 100.0,
            p95_ms: c.alert_p95_ms,
            unhealthy_samples: c.alert_unhealthy_samples.max(1),
            degraded_ms: c.alert_degraded_ms as i64,
            for_ms: c.alert_for_ms as i64,
            repeat_ms: c.alert_repeat_ms as i64,
        }
    }
}

/// Whether a rollup's route (`METHOD template`) is one whose failures page
/// someone: its template is in `critical`, the set the edge, which knows
/// the routes, hands over.
pub(crate) fn is_critical_route(route_key: &str, critical: &HashSet<String>) -> bool {
    let path = route_key.split_once(' ').map_or(route_key, |(_, p)| p);
    critical.contains(path)
}

/// Evaluates every rule over the history; returns the conditions that hold now.
pub(crate) fn evaluate(
    t: &Thresholds,
    rollups: &[RollupRow],
    health: &[SampleRow],
    circuit_open: &[&str],
    critical: &HashSet<String>,
    now: i64,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let mut per_route: HashMap<&str, Agg> = HashMap::new();
    for RollupRow { minute, route, agg } in rollups {
        if *minute >= now - t.window_ms {
            per_route.entry(route.as_str()).or_default().merge(agg);
        }
    }
    let mut routes: Vec<_> = per_route.into_iter().collect();
    routes.sort_by(|a, b| a.0.cmp(b.0));
    for (route, agg) in routes {
        if agg.requests < t.min_requests {
            continue;
        }
        let rate = agg.errors as f64 / agg.requests as f64;
        if is_critical_route(route, critical) && rate >= t.error_rate {
            out.push(Condition {
                rule: Rule::Route5xx,
                key: format!("route_5xx:{route}"),
                severity: Severity::High,
                summary: format!(
                    "{route}: {:.1}% of {} requests failed with 5xx",
                    rate * 100.0,
                    agg.requests
                ),
            });
        }
        if let Some(p95) = agg.quantile(0.95)
            && p95 > t.p95_ms
        {
            out.push(Condition {
                rule: Rule::RouteLatency,
                key: format!("route_latency:{route}"),
                severity: Severity::Medium,
                summary: format!("{route}: p95 {p95:.0} ms over {} ms", t.p95_ms),
            });
        }
    }
    let mut by_component: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    for sample in health {
        by_component
            .entry(sample.component.as_str())
            .or_default()
            .push((sample.at, sample.status.as_str()));
    }
    let mut components: Vec<_> = by_component.into_iter().collect();
    components.sort_by(|a, b| a.0.cmp(b.0));
    for (component, mut samples) in components {
        samples.sort_by_key(|s| s.0);
        let last: Vec<_> = samples.iter().rev().take(t.unhealthy_samples).collect();
        if last.len() == t.unhealthy_samples
            && last.iter().all(|(_, s)| *s == Status::Unhealthy.as_str())
        {
            let critical = matches!(component, "database" | "config");
            out.push(Condition {
                rule: Rule::ComponentUnhealthy,
                key: format!("component_unhealthy:{component}"),
                severity: if critical {
                    Severity::High
                } else {
                    Severity::Medium
                },
                summary: format!(
                    "{component} unhealthy for {} consecutive samples",
                    t.unhealthy_samples
                ),
            });
            continue;
        }
        let window: Vec<_> = samples
            .iter()
            .filter(|(at, _)| *at >= now - t.degraded_ms)
            .collect();
        let covered = samples
            .first()
            .is_some_and(|(at, _)| *at <= now - t.degraded_ms);
        if covered
            && !window.is_empty()
            && window.iter().all(|(_, s)| *s != Status::Healthy.as_str())
        {
            out.push(Condition {
                rule: Rule::ComponentDegraded,
                key: format!("component_degraded:{component}"),
                severity: Severity::Low,
                summary: format!(
                    "{component} not healthy for {} minutes",
                    t.degraded_ms / 60_000
                ),
            });
        }
    }
    for name in circuit_open {
        out.push(Condition {
            rule: Rule::CircuitOpen,
            key: format!("circuit_open:{name}"),
            severity: Severity::Medium,
            summary: format!("the {name} circuit breaker is open"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            window_ms: 300_000,
            min_requests: 10,
            error_rate: 0.05,
            p95_ms: 1000.0,
            unhealthy_samples: 3,
            degraded_ms: 600_000,
            for_ms: 0,
            repeat_ms: 1000,
        }
    }

    fn critical() -> HashSet<String> {
        ["/", "/api/auth/login"].map(String::from).into()
    }

    fn row(minute: i64, route: &str, agg: Agg) -> RollupRow {
        RollupRow {
            minute,
            route: route.to_owned(),
            agg,
        }
    }

    fn sample(at: i64, component: &str, status: &str) -> SampleRow {
        SampleRow {
            at,
            instance: "i".to_owned(),
            component: component.to_owned(),
            status: status.to_owned(),
            response_time_ms: 1,
        }
    }

    fn agg(ok: u64, err: u64, ms: f64) -> Agg {
        let mut a = Agg::default();
        for _ in 0..ok {
            a.record(ms, false);
        }
        for _ in 0..err {
            a.record(ms, true);
        }
        a
    }

    #[test]
    fn a_critical_routes_5xx_rate_fires_but_not_below_the_traffic_floor() {
        let now = 600_000;
        let r = vec![row(540_000, "POST /api/auth/login", agg(90, 10, 5.0))];
        let c = evaluate(&t(), &r, &[], &[], &critical(), now);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].rule, c[0].severity), (Rule::Route5xx, Severity::High));
        let r = vec![row(540_000, "POST /api/auth/login", agg(5, 4, 5.0))];
        assert!(evaluate(&t(), &r, &[], &[], &critical(), now).is_empty());
        let r = vec![row(540_000, "GET /platforms", agg(50, 50, 5.0))];
        assert!(
            evaluate(&t(), &r, &[], &[], &critical(), now).is_empty(),
            "not a critical route"
        );
    }

    #[test]
    fn slow_routes_and_unhealthy_components_and_open_circuits_fire() {
        let now = 600_000;
        let r = vec![row(540_000, "GET /platforms", agg(20, 0, 2000.0))];
        let h: Vec<_> = (0..3)
            .map(|i| sample(590_000 + i, "database", "unhealthy"))
            .collect();
        let c = evaluate(&t(), &r, &h, &["tiktok"], &critical(), now);
        let rules: Vec<_> = c.iter().map(|c| c.rule).collect();
        assert_eq!(
            rules,
            vec![
                Rule::RouteLatency,
                Rule::ComponentUnhealthy,
                Rule::CircuitOpen
            ]
        );
        assert_eq!(c[1].severity, Severity::High);
    }

    #[test]
    fn a_long_degradation_fires_low() {
        let now = 1_000_000;
        let h: Vec<_> = (0..12)
            .map(|i| sample(now - 660_000 + i * 60_000, "external", "degraded"))
            .collect();
        let c = evaluate(&t(), &[], &h, &[], &critical(), now);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].rule, c[0].severity),
            (Rule::ComponentDegraded, Severity::Low)
        );
    }
}
