//! Service level objectives and their multiwindow, multi-burn-rate alerts
//! (Google SRE workbook, "Alerting on SLOs").
//!
//! Every request to a non-probe route ([`is_probe`]) is one event for each
//! SLO: availability (bad when answered with 5xx) and latency (bad when
//! slower than `slo_latency_ms`). Requests count them into time slots of
//! their own ([`SloRecorder`], per-thread shards, one lock per request on
//! the thread's own shard), not into the per-minute rollups: the burn-rate
//! windows are seconds long in tests, and the rollups' latency buckets have
//! no bound at the objective. The monitor keeps the slots in memory for the
//! longest window and writes them to `slo_slots` at each flush, so the
//! alert lease holder sums every instance; while the database is
//! unreachable, an instance evaluates on its own slots.
//!
//! Burn rate = bad fraction / (1 − objective): 1 spends the error budget
//! exactly over the SLO period. A page holds when the burn rate over both
//! the long and the short page window reaches the page rate; a ticket
//! likewise with the ticket windows and rate, unless the same SLO's page
//! holds (one incident, one notification). Both need at least
//! `alert_min_requests` requests in their long window, so that one failed
//! request among the first few does not page.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use rustc_hash::FxHashMap;

use super::alerts::{Condition, Rule, Severity};
use super::{Monitor, PerThread};
use crate::config::MonitoringSettings;
pub(crate) use crate::store::slo::{SloCounts, SloSlot};
use crate::time_fmt::now_ms;

/// Route templates whose requests are not users' traffic and count for no
/// SLO: the orchestrator's probes (`/livez`, `/readyz`), Prometheus scrapes
/// (`/metrics`, whose failures `up` reports) and the health API, polled by
/// load balancers and uptime checkers and answering 503 by design while a
/// critical component is unhealthy (the `component_unhealthy` alert reports
/// that; counting it again would page twice for one cause).
pub(crate) const PROBE_ROUTES: [&str; 5] = [
    "/livez",
    "/readyz",
    "/metrics",
    "/api/health",
    "/api/health/{component}",
];

/// Whether a request counts for no SLO: a probe route, or no route at all
/// (`unmatched`: a 404 for a path the server does not serve). A scanner's
/// thousands of 404s are not users' traffic, and counted as good they would
/// dilute a real outage's error ratio below the page.
pub(crate) fn is_probe(route: &str) -> bool {
    PROBE_ROUTES.contains(&route) || route == super::metrics::UNMATCHED
}

/// Slots the longest window may span: bounds what the monitor keeps in
/// memory (per map, a few dozen bytes a slot) whatever the settings.
const MAX_SLOTS: i64 = 10_000;

/// One burn-rate alert: the rate and its two windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BurnAlert {
    pub rate: f64,
    pub long_ms: i64,
    pub short_ms: i64,
}

/// The SLOs and their alerts, from the settings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SloPolicy {
    /// Objectives as fractions (0.999).
    pub availability: f64,
    pub latency: f64,
    /// Slower than this (ms) is a bad latency event.
    pub latency_ms: u64,
    pub page: BurnAlert,
    pub ticket: BurnAlert,
    /// Requests the long window needs before either alert may hold.
    pub min_requests: u64,
    /// Width of a counting slot: a fifth of the shortest window, within
    /// [1 s, 60 s], and no narrower than the longest window / [`MAX_SLOTS`]
    /// (memory); a window sums the slots it overlaps, so it reads at most
    /// one slot (a fifth) more than its length.
    pub slot_ms: i64,
}

impl SloPolicy {
    pub(crate) fn from_config(c: &MonitoringSettings) -> Self {
        let ms = |v: u64| v.min(i64::MAX as u64) as i64;
        let page = BurnAlert {
            rate: c.slo_page_burn_rate,
            long_ms: ms(c.slo_page_long_window_ms),
            short_ms: ms(c.slo_page_short_window_ms),
        };
        let ticket = BurnAlert {
            rate: c.slo_ticket_burn_rate,
            long_ms: ms(c.slo_ticket_long_window_ms),
            short_ms: ms(c.slo_ticket_short_window_ms),
        };
        let windows = [page.short_ms, page.long_ms, ticket.short_ms, ticket.long_ms];
        let shortest = windows.into_iter().min().unwrap_or(60_000);
        let longest = windows.into_iter().max().unwrap_or(60_000);
        Self {
            availability: c.slo_availability_percent / 100.0,
            latency: c.slo_latency_percent / 100.0,
            latency_ms: c.slo_latency_ms,
            page,
            ticket,
            min_requests: c.alert_min_requests,
            slot_ms: (shortest / 5).clamp(1_000, 60_000).max(longest / MAX_SLOTS),
        }
    }

    /// How far back any alert looks (plus the slot that overlaps its start).
    pub(crate) fn longest_ms(&self) -> i64 {
        self.page.long_ms.max(self.ticket.long_ms) + self.slot_ms
    }

    pub(crate) fn slot_of(&self, at_ms: i64) -> i64 {
        at_ms - at_ms.rem_euclid(self.slot_ms)
    }
}

/// Burn rate of `bad` among `total` against `objective` (a fraction): 0
/// without traffic.
pub(crate) fn burn_rate(bad: u64, total: u64, objective: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let budget = (1.0 - objective).max(f64::MIN_POSITIVE);
    (bad as f64 / total as f64) / budget
}

/// The counts of the slots overlapping the `window_ms` before `now`.
fn window(slots: &[SloSlot], slot_ms: i64, window_ms: i64, now: i64) -> SloCounts {
    let mut sum = SloCounts::default();
    for s in slots {
        if s.slot + slot_ms > now - window_ms && s.slot <= now {
            sum.add(&s.counts);
        }
    }
    sum
}

#[derive(Clone, Copy)]
enum Kind {
    Availability,
    Latency,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Availability => "availability",
            Kind::Latency => "latency",
        }
    }

    fn bad(self, c: &SloCounts) -> u64 {
        match self {
            Kind::Availability => c.errors,
            Kind::Latency => c.slow,
        }
    }

    fn rules(self) -> (Rule, Rule) {
        match self {
            Kind::Availability => (Rule::SloAvailabilityPage, Rule::SloAvailabilityTicket),
            Kind::Latency => (Rule::SloLatencyPage, Rule::SloLatencyTicket),
        }
    }
}

/// Burn rates of one SLO over one alert's windows, and the long window's
/// request count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Burn {
    pub long: f64,
    pub short: f64,
    pub requests: u64,
}

fn burn(p: &SloPolicy, kind: Kind, alert: &BurnAlert, slots: &[SloSlot], now: i64) -> Burn {
    let objective = match kind {
        Kind::Availability => p.availability,
        Kind::Latency => p.latency,
    };
    let long = window(slots, p.slot_ms, alert.long_ms, now);
    let short = window(slots, p.slot_ms, alert.short_ms, now);
    Burn {
        long: burn_rate(kind.bad(&long), long.requests, objective),
        short: burn_rate(kind.bad(&short), short.requests, objective),
        requests: long.requests,
    }
}

fn holds(p: &SloPolicy, alert: &BurnAlert, b: &Burn) -> bool {
    b.requests >= p.min_requests.max(1) && b.long >= alert.rate && b.short >= alert.rate
}

fn seconds(ms: i64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

fn condition(p: &SloPolicy, kind: Kind, rule: Rule, alert: &BurnAlert, b: &Burn) -> Condition {
    let (objective, what) = match kind {
        Kind::Availability => (p.availability, "answered without 5xx".to_owned()),
        Kind::Latency => (p.latency, format!("answered within {} ms", p.latency_ms)),
    };
    let page = matches!(rule, Rule::SloAvailabilityPage | Rule::SloLatencyPage);
    Condition {
        rule,
        key: rule.as_str().to_owned(),
        severity: if page {
            Severity::High
        } else {
            Severity::Medium
        },
        summary: format!(
            "{} SLO ({}% {what}): error budget burning {:.1}x over {} and {:.1}x over {} ({} at {}x; {} requests)",
            kind.name(),
            objective * 100.0,
            b.long,
            seconds(alert.long_ms),
            b.short,
            seconds(alert.short_ms),
            if page { "pages" } else { "tickets" },
            alert.rate,
            b.requests,
        ),
    }
}

/// The SLO conditions that hold at `now` over `slots` (every instance's,
/// or this instance's alone).
pub(crate) fn evaluate(p: &SloPolicy, slots: &[SloSlot], now: i64) -> Vec<Condition> {
    let mut out = Vec::new();
    for kind in [Kind::Availability, Kind::Latency] {
        let (page_rule, ticket_rule) = kind.rules();
        let page = burn(p, kind, &p.page, slots, now);
        if holds(p, &p.page, &page) {
            out.push(condition(p, kind, page_rule, &p.page, &page));
            continue;
        }
        let ticket = burn(p, kind, &p.ticket, slots, now);
        if holds(p, &p.ticket, &ticket) {
            out.push(condition(p, kind, ticket_rule, &p.ticket, &ticket));
        }
    }
    out
}

/// Per-thread counts of one recording thread: per slot since the last
/// take, and in total since start (the Prometheus counters).
#[derive(Default)]
struct Shard {
    slots: FxHashMap<i64, SloCounts>,
    total: SloCounts,
}

/// The request path's side: counts every non-probe request into its slot.
pub(crate) struct SloRecorder {
    policy: SloPolicy,
    shards: PerThread<std::sync::Mutex<Shard>>,
}

impl SloRecorder {
    pub(crate) fn new(policy: SloPolicy, shards: usize) -> Self {
        Self {
            policy,
            shards: PerThread::new(shards),
        }
    }

    /// Counts one finished request to `route` (a template) that started at
    /// `at_ms`.
    pub(crate) fn record(&self, route: &str, status: u16, seconds: f64, at_ms: i64) {
        if is_probe(route) {
            return;
        }
        let event = SloCounts {
            requests: 1,
            errors: u64::from(status >= 500),
            slow: u64::from(seconds * 1000.0 > self.policy.latency_ms as f64),
        };
        let slot = self.policy.slot_of(at_ms);
        let mut shard = self.shards.mine().lock().unwrap_or_else(|p| p.into_inner());
        shard.slots.entry(slot).or_default().add(&event);
        shard.total.add(&event);
    }

    /// Every slot counted since the last call, merged over the shards,
    /// oldest first.
    pub(crate) fn take(&self) -> Vec<SloSlot> {
        let mut merged: BTreeMap<i64, SloCounts> = BTreeMap::new();
        for shard in self.shards.all() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (slot, counts) in shard.slots.drain() {
                merged.entry(slot).or_default().add(&counts);
            }
        }
        merged
            .into_iter()
            .map(|(slot, counts)| SloSlot { slot, counts })
            .collect()
    }

    /// Every event since start.
    pub(crate) fn totals(&self) -> SloCounts {
        let mut sum = SloCounts::default();
        for shard in self.shards.all() {
            sum.add(&shard.lock().unwrap_or_else(|p| p.into_inner()).total);
        }
        sum
    }
}

/// This instance's slots in memory: every recent one (local evaluation)
/// and those not yet written (the flush; merged into shared reads). Both
/// keep only what the longest window can still read, which bounds them
/// through any outage.
#[derive(Default)]
struct SloHistory {
    recent: BTreeMap<i64, SloCounts>,
    pending: BTreeMap<i64, SloCounts>,
    /// Pending slots dropped as too old to matter, since the last flush.
    dropped: u64,
}

impl SloHistory {
    fn add(&mut self, slots: &[SloSlot], keep_from: i64) {
        for s in slots {
            self.recent.entry(s.slot).or_default().add(&s.counts);
            self.pending.entry(s.slot).or_default().add(&s.counts);
        }
        self.recent = self.recent.split_off(&keep_from);
        let kept = self.pending.split_off(&keep_from);
        self.dropped += std::mem::replace(&mut self.pending, kept).len() as u64;
    }

    fn restore(&mut self, slots: &[SloSlot]) {
        for s in slots {
            self.pending.entry(s.slot).or_default().add(&s.counts);
        }
    }
}

fn to_slots(map: &BTreeMap<i64, SloCounts>, from: i64) -> Vec<SloSlot> {
    map.range(from..)
        .map(|(slot, counts)| SloSlot {
            slot: *slot,
            counts: *counts,
        })
        .collect()
}

/// A flush of slots whose commit is not known to have happened.
struct InDoubt {
    batch: String,
    slots: Vec<SloSlot>,
}

/// The monitor's SLO state.
pub(crate) struct SloState {
    pub policy: SloPolicy,
    history: std::sync::Mutex<SloHistory>,
    in_doubt: std::sync::Mutex<Option<InDoubt>>,
    /// Whether the last flush dropped slots (logged once per episode).
    dropping: AtomicBool,
}

impl SloState {
    pub(crate) fn new(policy: SloPolicy) -> Self {
        Self {
            policy,
            history: Default::default(),
            in_doubt: Default::default(),
            dropping: AtomicBool::new(false),
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, SloHistory> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_doubt(&self) -> std::sync::MutexGuard<'_, Option<InDoubt>> {
        self.in_doubt.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Monitor {
    /// Moves what requests counted since the last call into the history.
    fn collect_slo(&self) {
        let slots = self.metrics.slo.take();
        let keep_from = self
            .slo
            .policy
            .slot_of(now_ms() - self.slo.policy.longest_ms());
        self.slo.history().add(&slots, keep_from);
    }

    /// Writes the pending slots in one transaction (with its batch id, the
    /// in-doubt pattern of the rollup flush: a flush whose answer was lost
    /// is looked up before anything else is written, so no delta is added
    /// twice). What could not be written stays pending for the next flush.
    pub(super) async fn flush_slo(&self) -> Result<(), sqlx::Error> {
        self.collect_slo();
        let dropped = std::mem::take(&mut self.slo.history().dropped);
        if dropped > 0 && !self.slo.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                slots = dropped,
                "SLO slots older than the longest burn-rate window were dropped unwritten"
            );
        } else if dropped == 0 {
            self.slo.dropping.store(false, Ordering::Relaxed);
        }
        let _gate = self.flush_gate.write().await;
        let doubt = self.slo.in_doubt().take();
        if let Some(doubt) = doubt {
            match tokio::time::timeout(self.flush_budget, self.db.batch_written(&doubt.batch)).await
            {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => self.slo.history().restore(&doubt.slots),
                failed => {
                    *self.slo.in_doubt() = Some(doubt);
                    return Err(super::flush::failure(failed));
                }
            }
        }
        let slots = to_slots(&std::mem::take(&mut self.slo.history().pending), i64::MIN);
        if slots.is_empty() {
            return Ok(());
        }
        let batch = uuid::Uuid::now_v7().simple().to_string();
        let write = self
            .db
            .write_slo_batch(&batch, &self.instance, &slots, now_ms());
        match tokio::time::timeout(self.flush_budget, write).await {
            Ok(Ok(())) => Ok(()),
            failed => {
                *self.slo.in_doubt() = Some(InDoubt { batch, slots });
                Err(super::flush::failure(failed))
            }
        }
    }

    /// Every instance's slots the longest window reads: the database's and
    /// what this instance has not written yet (or has in doubt).
    async fn shared_slo_slots(&self, now: i64) -> Result<Vec<SloSlot>, sqlx::Error> {
        self.collect_slo();
        let from = self.slo.policy.slot_of(now - self.slo.policy.longest_ms());
        let _gate = self.flush_gate.read().await;
        let stored = self.db.slo_slots_since(from).await?;
        let mut merged: BTreeMap<i64, SloCounts> = BTreeMap::new();
        for s in stored {
            merged.entry(s.slot).or_default().add(&s.counts);
        }
        let history = self.slo.history();
        let unwritten = history.pending.range(from..);
        let doubt = self.slo.in_doubt();
        // A batch in doubt is counted as unwritten: the next flush finds
        // out, and a read in between errs on the side of counting it.
        let in_doubt = doubt.iter().flat_map(|d| d.slots.iter());
        for (slot, counts) in unwritten.chain(in_doubt.map(|s| (&s.slot, &s.counts))) {
            if *slot >= from {
                merged.entry(*slot).or_default().add(counts);
            }
        }
        Ok(to_slots(&merged, i64::MIN))
    }

    /// The SLO conditions over every instance's slots.
    pub(super) async fn slo_conditions_shared(
        &self,
        now: i64,
    ) -> Result<Vec<Condition>, sqlx::Error> {
        let slots = self.shared_slo_slots(now).await?;
        Ok(evaluate(&self.slo.policy, &slots, now))
    }

    /// The SLO conditions over this instance's own slots.
    pub(super) fn slo_conditions_local(&self, now: i64) -> Vec<Condition> {
        self.collect_slo();
        let from = self.slo.policy.slot_of(now - self.slo.policy.longest_ms());
        let slots = to_slots(&self.slo.history().recent, from);
        evaluate(&self.slo.policy, &slots, now)
    }

    /// Deletes stored slots no window reads any more.
    pub(super) async fn prune_slo(&self) -> Result<u64, sqlx::Error> {
        let before = self
            .slo
            .policy
            .slot_of(now_ms() - self.slo.policy.longest_ms());
        self.db.prune_slo(before).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 99.9 % availability, 99 % under 300 ms; page 14.4x over 60 s and
    /// 5 s, ticket 6x over 360 s and 30 s; slots of 1 s.
    fn policy() -> SloPolicy {
        let c = MonitoringSettings {
            slo_page_long_window_ms: 60_000,
            slo_page_short_window_ms: 5_000,
            slo_ticket_long_window_ms: 360_000,
            slo_ticket_short_window_ms: 30_000,
            alert_min_requests: 20,
            ..MonitoringSettings::default()
        };
        SloPolicy::from_config(&c)
    }

    fn slot(at: i64, requests: u64, errors: u64, slow: u64) -> SloSlot {
        SloSlot {
            slot: at,
            counts: SloCounts {
                requests,
                errors,
                slow,
            },
        }
    }

    #[test]
    fn the_burn_rate_is_the_bad_fraction_over_the_error_budget() {
        // Exact up to the float rounding of 1 - objective.
        let exact = |got: f64, want: f64| assert!((got - want).abs() < 1e-9, "{got} != {want}");
        exact(burn_rate(1, 1000, 0.999), 1.0);
        exact(burn_rate(0, 1000, 0.999), 0.0);
        exact(burn_rate(0, 0, 0.999), 0.0);
        exact(burn_rate(36, 250, 0.99), 14.4);
        exact(burn_rate(10, 10, 0.99), 100.0);
        exact(burn_rate(3, 200, 0.9), 0.15);
    }

    #[test]
    fn slots_are_a_fifth_of_the_shortest_window_within_bounds() {
        assert_eq!(
            SloPolicy::from_config(&MonitoringSettings::default()).slot_ms,
            60_000
        );
        assert_eq!(policy().slot_ms, 1_000);
        let c = MonitoringSettings {
            slo_page_short_window_ms: 100_000,
            ..MonitoringSettings::default()
        };
        assert_eq!(SloPolicy::from_config(&c).slot_ms, 20_000);
        // A 30-day ticket window with a 1 s page window: 10 000 slots.
        let c = MonitoringSettings {
            slo_page_short_window_ms: 1_000,
            slo_ticket_long_window_ms: 30 * 86_400_000,
            ..MonitoringSettings::default()
        };
        assert_eq!(SloPolicy::from_config(&c).slot_ms, 259_200);
        assert_eq!(policy().slot_of(12_345), 12_000);
        assert_eq!(policy().longest_ms(), 361_000);
    }

    #[test]
    fn a_fast_burn_pages_and_not_also_tickets() {
        let now = 1_000_000;
        // 100 requests a second for a minute, 2 % failing: 20x.
        let slots: Vec<_> = (0..60)
            .map(|i| slot(now - 59_000 + i * 1_000, 100, 2, 0))
            .collect();
        let c = evaluate(&policy(), &slots, now);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].rule, Rule::SloAvailabilityPage);
        assert_eq!(c[0].key, "slo_availability_page");
        assert_eq!(c[0].severity, Severity::High);
        assert_eq!(
            c[0].summary,
            "availability SLO (99.9% answered without 5xx): error budget burning 20.0x over 1m and 20.0x over 5s (pages at 14.4x; 6000 requests)"
        );
    }

    #[test]
    fn a_slow_burn_tickets_without_paging() {
        let now = 1_000_000;
        // 8 % slow against a 99 % objective is 8x: between the ticket's
        // 6x and the page's 14.4x.
        let slots: Vec<_> = (0..360)
            .map(|i| slot(now - 359_000 + i * 1_000, 100, 0, 8))
            .collect();
        let c = evaluate(&policy(), &slots, now);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(
            (c[0].rule, c[0].severity, c[0].key.as_str()),
            (
                Rule::SloLatencyTicket,
                Severity::Medium,
                "slo_latency_ticket"
            )
        );
        assert_eq!(
            c[0].summary,
            "latency SLO (99% answered within 300 ms): error budget burning 8.0x over 6m and 8.0x over 30s (tickets at 6x; 36000 requests)"
        );
    }

    #[test]
    fn a_blip_trips_only_the_short_window_and_pages_nobody() {
        let now = 1_000_000;
        // 57 busy good seconds, then 3 quiet ones all failing: the short
        // window (6 slots) burns at 300 / 3300 = 90.9x, the long one at
        // 300 / 57300 = 5.2x.
        let mut slots: Vec<_> = (0..57)
            .map(|i| slot(now - 59_000 + i * 1_000, 1_000, 0, 0))
            .collect();
        slots.extend((57..60).map(|i| slot(now - 59_000 + i * 1_000, 100, 100, 0)));
        let p = policy();
        let page = burn(&p, Kind::Availability, &p.page, &slots, now);
        assert_eq!(page.requests, 57_300);
        assert!(page.short > 14.4, "{page:?}");
        assert!(page.long < 14.4, "{page:?}");
        let c = evaluate(&p, &slots, now);
        assert!(
            c.iter().all(|c| c.rule != Rule::SloAvailabilityPage),
            "{c:?}"
        );
    }

    #[test]
    fn below_the_traffic_floor_nothing_holds() {
        let now = 1_000_000;
        let slots = vec![slot(now - 1_000, 2, 1, 1)];
        assert!(evaluate(&policy(), &slots, now).is_empty());
        let slots = vec![slot(now - 1_000, 20, 20, 20)];
        let rules: Vec<_> = evaluate(&policy(), &slots, now)
            .into_iter()
            .map(|c| c.rule)
            .collect();
        assert_eq!(rules, vec![Rule::SloAvailabilityPage, Rule::SloLatencyPage]);
    }

    #[test]
    fn a_window_sums_the_slots_it_overlaps() {
        let slots = vec![
            slot(0, 1, 0, 0),
            slot(1_000, 10, 0, 0),
            slot(2_000, 100, 0, 0),
        ];
        // 5 s before 6.5 s starts at 1.5 s: the slot from 1 s overlaps it.
        assert_eq!(window(&slots, 1_000, 5_000, 6_500).requests, 110);
        assert_eq!(window(&slots, 1_000, 5_000, 7_000).requests, 100);
    }

    #[test]
    fn probes_are_not_counted_and_slow_or_failing_requests_are_bad() {
        let r = SloRecorder::new(policy(), 2);
        r.record("/livez", 500, 2.0, 1_500);
        r.record("/api/health/{component}", 503, 0.001, 1_500);
        r.record("unmatched", 404, 0.001, 1_500);
        r.record("/", 200, 0.3, 1_500);
        r.record("/", 200, 0.301, 1_999);
        r.record("/api/x", 503, 0.001, 2_000);
        let slots = r.take();
        assert_eq!(slots, vec![slot(1_000, 2, 0, 1), slot(2_000, 1, 1, 0)]);
        assert!(r.take().is_empty());
        let total = r.totals();
        assert_eq!((total.requests, total.errors, total.slow), (3, 1, 1));
    }

    #[test]
    fn history_keeps_only_what_the_longest_window_reads() {
        let mut h = SloHistory::default();
        h.add(&[slot(1_000, 1, 0, 0), slot(5_000, 2, 0, 0)], 0);
        h.add(&[slot(5_000, 3, 0, 0)], 2_000);
        assert_eq!(to_slots(&h.recent, i64::MIN), vec![slot(5_000, 5, 0, 0)]);
        assert_eq!(to_slots(&h.pending, i64::MIN), vec![slot(5_000, 5, 0, 0)]);
        assert_eq!(h.dropped, 1);
    }
}
