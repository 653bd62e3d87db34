//! Monitoring: route metrics and `/metrics` ([`metrics`]), per-minute
//! rollups and health samples kept in the database so history survives
//! restarts and instances add up ([`rollup`]), alerting ([`alerts`]), and
//! the data behind the dashboard, health trends and the scaling forecast
//! ([`Monitor`]).
//!
//! Monitoring must keep working through the outage it reports. So requests
//! never write monitoring rows (reads merge what this instance has not
//! written yet, [`history`]); one background task writes, in one key order,
//! and keeps what it could not write for the next attempt; and alerts are
//! evaluated from this instance's memory while the database is unreachable,
//! with notifications deduplicated across instances through Redis when it
//! is configured.

pub mod alerts;
pub mod histogram;
pub mod history;
pub mod metrics;
pub mod rollup;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::MonitoringSettings;
use crate::health::HealthSampler;
use crate::store::Db;
use crate::store::monitoring::AlertRow;
use crate::time_fmt::{now_ms, rfc3339_from_ms};
use alerts::{LocalAlerts, Notification, Notifier, Thresholds};
use history::{LocalHistory, RollupRow, SampleRow, merge_rollups};
use metrics::HttpMetrics;
use rollup::{Agg, minute_of};

/// Per-thread copies of some state (shards), each alone on its cache
/// line(s) (crossbeam's `CachePadded`: 128 bytes on x86-64, where
/// adjacent-line prefetch pairs lines), so the
/// runtime's workers, recording on every request, neither take turns on
/// one lock nor pull each other's lines back and forth between cores. A
/// thread gets a shard by a thread-local index, round robin in order of
/// first use; threads past the shard count share, which stays correct.
/// Readers (a scrape, a flush) go through every shard.
pub struct PerThread<T> {
    shards: Box<[CachePadded<T>]>,
}

impl<T: Default> PerThread<T> {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| CachePadded::default()).collect(),
        }
    }
}

impl<T> PerThread<T> {
    /// This thread's shard.
    pub fn mine(&self) -> &T {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        thread_local! {
            static INDEX: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        &self.shards[INDEX.with(|i| *i) % self.shards.len()]
    }

    /// Every shard.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|s| &**s)
    }
}

/// A dashboard range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    M15,
    H1,
    H6,
    H24,
    D7,
}

impl Range {
    /// Every range, in the order the API lists them.
    pub const ALL: [Range; 5] = [Range::M15, Range::H1, Range::H6, Range::H24, Range::D7];

    /// Parsed through [`Range::ALL`], so what the API accepts and what
    /// the OpenAPI document lists are one list.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Range::M15 => "15m",
            Range::H1 => "1h",
            Range::H6 => "6h",
            Range::H24 => "24h",
            Range::D7 => "7d",
        }
    }
    pub fn millis(self) -> i64 {
        match self {
            Range::M15 => 15 * 60_000,
            Range::H1 => 3_600_000,
            Range::H6 => 6 * 3_600_000,
            Range::H24 => 24 * 3_600_000,
            Range::D7 => 7 * 24 * 3_600_000,
        }
    }
    /// Width of one chart point.
    pub fn step_ms(self) -> i64 {
        match self {
            Range::M15 | Range::H1 => 60_000,
            Range::H6 => 5 * 60_000,
            Range::H24 => 15 * 60_000,
            Range::D7 => 2 * 3_600_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStats {
    pub route: String,
    pub requests: u64,
    pub rate_per_sec: f64,
    /// Percent of requests answered with 5xx.
    pub error_rate: f64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

fn route_stats(route: String, agg: &Agg, seconds: f64) -> RouteStats {
    RouteStats {
        route,
        requests: agg.requests,
        rate_per_sec: agg.requests as f64 / seconds.max(1.0),
        error_rate: if agg.requests == 0 {
            0.0
        } else {
            agg.errors as f64 * 100.0 / agg.requests as f64
        },
        p50: agg.quantile(0.50),
        p95: agg.quantile(0.95),
        p99: agg.quantile(0.99),
    }
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// Point starts, epoch seconds.
    pub timestamps: Vec<i64>,
    pub requests_per_sec: Vec<f64>,
    /// Percent 5xx.
    pub error_rate: Vec<f64>,
    pub p95: Vec<Option<f64>>,
    pub p99: Vec<Option<f64>>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheView {
    pub hit_ratio: Option<f64>,
    #[schema(value_type = Object)]
    pub stats: Option<crate::cache::CacheStats>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    pub id: String,
    pub rule: String,
    pub key: String,
    pub severity: String,
    pub state: String,
    pub summary: String,
    pub started_at: String,
    pub fired_at: Option<String>,
    pub resolved_at: Option<String>,
    pub notifications: i64,
}

impl From<AlertRow> for AlertView {
    fn from(a: AlertRow) -> Self {
        Self {
            id: a.id,
            rule: a.rule,
            key: a.alert_key,
            severity: a.severity,
            state: a.state,
            summary: a.summary,
            started_at: rfc3339_from_ms(a.started_at),
            fired_at: a.fired_at.map(rfc3339_from_ms),
            resolved_at: a.resolved_at.map(rfc3339_from_ms),
            notifications: a.notifications,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsView {
    pub active: Vec<AlertView>,
    pub recent: Vec<AlertView>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Requests per second over the last 5 minutes.
    pub current_rate: f64,
    pub forecast_15m: f64,
    pub forecast_60m: f64,
    pub capacity_per_instance: f64,
    pub instances_15m: u32,
    pub instances_60m: u32,
    pub method: String,
}

/// `DashboardData`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardData {
    pub range: String,
    pub generated_at: String,
    pub step_seconds: i64,
    pub overall: RouteStats,
    pub routes: Vec<RouteStats>,
    pub series: Series,
    pub health: crate::health::HealthStatus,
    pub cache: CacheView,
    #[schema(value_type = Object)]
    pub pool: crate::store::PoolStats,
    pub alerts: AlertsView,
    pub scaling: Scaling,
    /// Every instance whose traffic is in the totals above.
    pub instances: Vec<InstanceStats>,
}

/// One instance's share of the range.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStats {
    pub instance: String,
    pub requests: i64,
    pub errors: i64,
    /// Start of the latest minute it reported.
    pub last_seen: String,
}

/// One health sample of a component (`HealthTrend`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthTrend {
    pub component: String,
    pub timestamp: String,
    pub status: String,
    pub response_time: i64,
    pub instance: String,
}

/// The error of a database call that failed or ran out of its budget (a
/// budget past is reported as a timeout, as the pool would).
fn failure<T>(r: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>) -> sqlx::Error {
    match r {
        Ok(Err(e)) => e,
        _ => sqlx::Error::PoolTimedOut,
    }
}

/// Rows of each kind per flush transaction: a long outage's backlog goes
/// out in short transactions, reads interleaved.
const FLUSH_BATCH_ROWS: usize = 500;

/// The lease whose holder evaluates alerts for every instance.
const ALERT_LEASE: &str = "alert-evaluator";

pub struct Monitor {
    pub instance: String,
    pub metrics: Arc<HttpMetrics>,
    db: Db,
    thresholds: Thresholds,
    notifier: Notifier,
    /// Deduplicates notifications across instances when Redis is set.
    dedup: Option<Arc<crate::redis_tier::RedisTier>>,
    capacity_rps: f64,
    retention_ms: i64,
    /// How long one evaluation against the database may take before this
    /// instance evaluates on its own.
    shared_budget: Duration,
    /// How far apart two instances' notifications of the same alert and
    /// status may be and still be one (they see a condition within a few
    /// samples of each other). Short, so that a claim whose follow-up was
    /// sent while Redis was down cannot silence the next episode.
    dedup_window: Duration,
    /// How long one flush may take; past it the write is abandoned and
    /// retried, so a stuck connection cannot hold the reads behind the gate.
    flush_budget: Duration,
    history: std::sync::Mutex<LocalHistory>,
    /// Held (exclusively) by a flush between taking the pending rows and
    /// writing them or giving them back, so that a read never sees rows
    /// both in the database and in memory, or in neither.
    flush_gate: tokio::sync::RwLock<()>,
    /// Held through an evaluation; taken for good by the shutdown, so that
    /// an evaluation is not cut between deciding a notification and
    /// queueing it.
    evaluation: tokio::sync::Mutex<()>,
    /// A flush batch whose commit is not known to have happened.
    in_doubt: std::sync::Mutex<Option<(String, history::Pending)>>,
    /// Alerts raised while the database was unreachable.
    local_alerts: LocalAlerts,
    /// Whether the last evaluation could not use the database.
    evaluating_locally: AtomicBool,
    last_health_sample: AtomicI64,
}

/// What the monitor needs from outside its own settings.
pub struct MonitorContext {
    /// This instance's name in shared history.
    pub instance: String,
    /// How often health is sampled (`HUNTAZE_HEALTH_INTERVAL_MS`): alerts
    /// on unhealthy samples wait for that many rounds.
    pub health_interval_ms: u64,
    /// The database pool's acquire timeout (`HUNTAZE_DB_ACQUIRE_TIMEOUT_MS`),
    /// which bounds one flush.
    pub db_acquire_timeout_ms: u64,
}

impl Monitor {
    pub fn new(
        config: &MonitoringSettings,
        context: MonitorContext,
        db: Db,
        metrics: Arc<HttpMetrics>,
        dedup: Option<Arc<crate::redis_tier::RedisTier>>,
    ) -> anyhow::Result<Self> {
        let instance = context.instance;
        let thresholds = Thresholds::from_config(config);
        // Local evaluation looks back as far as any rule does.
        let keep_ms = thresholds.window_ms.max(thresholds.degraded_ms) + 120_000;
        Ok(Self {
            notifier: Notifier::new(config, instance.clone(), Arc::clone(db.retries()))?,
            history: std::sync::Mutex::new(LocalHistory::new(instance.clone(), keep_ms)),
            instance,
            metrics,
            db,
            thresholds,
            dedup,
            capacity_rps: config.scaling_capacity_rps.max(1.0),
            retention_ms: config.retention_ms as i64,
            shared_budget: Duration::from_millis(config.alert_eval_ms.clamp(1_000, 5_000)),
            dedup_window: Duration::from_millis(
                (2 * (config.alert_unhealthy_samples.max(1) as u64 * context.health_interval_ms
                    + config.alert_for_ms
                    + config.alert_eval_ms))
                    .clamp(10_000, config.alert_repeat_ms.max(10_000)),
            ),
            flush_budget: Duration::from_millis(
                context
                    .db_acquire_timeout_ms
                    .saturating_mul(2)
                    .clamp(1_000, 10_000),
            ),
            flush_gate: tokio::sync::RwLock::new(()),
            evaluation: tokio::sync::Mutex::new(()),
            in_doubt: std::sync::Mutex::new(None),
            local_alerts: LocalAlerts::default(),
            evaluating_locally: AtomicBool::new(false),
            last_health_sample: AtomicI64::new(0),
        })
    }

    fn history(&self) -> std::sync::MutexGuard<'_, LocalHistory> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves what requests recorded since the last call into the history.
    fn collect(&self) {
        let deltas = self.metrics.rollups.take_all();
        if !deltas.is_empty() {
            self.history().add_rollups(deltas, now_ms());
        }
    }

    /// Keeps one sampling round (every round, whether or not the database
    /// is there to take it now).
    pub fn record_health(&self, health: &HealthSampler) {
        let snap = health.snapshot();
        let last = self
            .last_health_sample
            .swap(snap.taken_at_ms, Ordering::Relaxed);
        if snap.taken_at_ms == last || snap.taken_at_ms <= 0 {
            return;
        }
        let samples: Vec<_> = snap
            .components
            .iter()
            .map(|(c, _)| {
                (
                    c.name.clone(),
                    c.status.as_str().to_owned(),
                    c.response_time as i64,
                )
            })
            .collect();
        self.history().add_samples(snap.taken_at_ms, &samples);
    }

    /// Writes pending rollups and health samples, in batches. What could
    /// not be written within the flush budget stays pending (bounded) for
    /// the next flush. A batch whose outcome is unknown (its answer lost,
    /// or the budget passed during COMMIT) is looked up by its id before
    /// anything else is written, so no delta is added twice.
    pub async fn flush(&self) -> Result<(), sqlx::Error> {
        self.collect();
        let dropped = self.history().take_dropped();
        if dropped > 0 {
            tracing::warn!(
                rows = dropped,
                "monitoring history beyond the outage buffer was dropped (oldest first)"
            );
        }
        loop {
            // The gate is taken per batch, so that reads get through
            // between the batches of a long outage's backlog.
            let _gate = self.flush_gate.write().await;
            let in_doubt = self.in_doubt().take();
            if let Some((batch, rows)) = in_doubt {
                match tokio::time::timeout(self.flush_budget, self.db.batch_written(&batch)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => self.history().restore(rows),
                    failed => {
                        *self.in_doubt() = Some((batch, rows));
                        return Err(failure(failed));
                    }
                }
            }
            let rows = self.history().take_pending(FLUSH_BATCH_ROWS);
            if rows.rollups.is_empty() && rows.samples.is_empty() {
                return Ok(());
            }
            let batch = uuid::Uuid::now_v7().simple().to_string();
            let write = self.db.write_monitoring_batch(
                &batch,
                &self.instance,
                &rows.rollups,
                &rows.samples,
                now_ms(),
            );
            match tokio::time::timeout(self.flush_budget, write).await {
                Ok(Ok(())) => {}
                failed => {
                    *self.in_doubt() = Some((batch, rows));
                    return Err(failure(failed));
                }
            }
        }
    }

    fn in_doubt(&self) -> std::sync::MutexGuard<'_, Option<(String, history::Pending)>> {
        self.in_doubt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last flush, the alert lease given up and the notifications
    /// already decided delivered, within `limit`.
    pub async fn shut_down(&self, limit: Duration) -> Result<(), sqlx::Error> {
        let last = async {
            // No evaluation after this one: what it decided gets sent.
            let _no_more = self.evaluation.lock().await;
            let flushed = self.flush().await;
            let released = self.db.release_lease(ALERT_LEASE, &self.instance).await;
            if !self.notifier.drain(limit).await {
                tracing::warn!("alert notifications still queued at shutdown");
            }
            flushed.and(released)
        };
        tokio::time::timeout(limit, last)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// Rollups of every instance from minute `from` on: the database's and
    /// what this instance has not written yet.
    async fn rollups_since(&self, from: i64) -> Result<Vec<RollupRow>, sqlx::Error> {
        self.collect();
        let _gate = self.flush_gate.read().await;
        let stored = self.db.rollups_since(from).await?;
        let unwritten = self.history().pending_rollups_since(from);
        Ok(merge_rollups(stored, unwritten))
    }

    /// Health samples of every instance from `from` on, oldest first.
    async fn samples_since(&self, from: i64) -> Result<Vec<SampleRow>, sqlx::Error> {
        let _gate = self.flush_gate.read().await;
        let mut samples = self.db.health_samples_since(from).await?;
        samples.extend(self.history().pending_samples_since(from));
        samples.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
        samples.dedup_by(|a, b| (a.0, &a.1, &a.2) == (b.0, &b.1, &b.2));
        Ok(samples)
    }

    /// One alert evaluation. Through the database (only the instance
    /// holding the lease evaluates) when it answers within the budget; on
    /// this instance's own history otherwise, so that an outage of the
    /// database is itself reported.
    pub async fn evaluate_alerts(&self, circuits_open: &[&str]) -> usize {
        let _evaluating = self.evaluation.lock().await;
        let now = now_ms();
        let was_local = self.evaluating_locally.load(Ordering::Relaxed);
        let mut sent = 0;
        if was_local {
            // Report first: finding out whether the database is back may
            // take the whole budget.
            sent += self.evaluate_locally(now, circuits_open).await;
        }
        let shared =
            tokio::time::timeout(self.shared_budget, self.evaluate_shared(now, circuits_open))
                .await;
        match shared {
            Ok(Ok(n)) => {
                if was_local {
                    self.evaluating_locally.store(false, Ordering::Relaxed);
                    tracing::warn!("database reachable again: alerts are evaluated together again");
                }
                sent + n
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} ms", self.shared_budget.as_millis()),
                };
                if !was_local {
                    self.evaluating_locally.store(true, Ordering::Relaxed);
                    tracing::error!(
                        error = %why,
                        "alert evaluation cannot use the database: evaluating on this instance's own history"
                    );
                    sent += self.evaluate_locally(now, circuits_open).await;
                }
                sent
            }
        }
    }

    async fn evaluate_shared(
        &self,
        now: i64,
        circuits_open: &[&str],
    ) -> Result<usize, sqlx::Error> {
        let lease_for = (self.thresholds.window_ms).clamp(30_000, 120_000);
        let holder = self
            .db
            .acquire_lease(ALERT_LEASE, &self.instance, now, now + lease_for)
            .await?;
        self.hand_over_local_alerts().await?;
        if !holder {
            return Ok(0);
        }
        let from = now - self.thresholds.window_ms.max(self.thresholds.degraded_ms) - 60_000;
        let rollups = self.rollups_since(minute_of(from)).await?;
        let health = self.samples_since(from).await?;
        let holding = alerts::evaluate(&self.thresholds, &rollups, &health, circuits_open, now);
        let notes = alerts::advance(&self.db, &self.thresholds, &holding, now).await?;
        Ok(self.notify(notes, now).await)
    }

    async fn evaluate_locally(&self, now: i64, circuits_open: &[&str]) -> usize {
        self.collect();
        let from = now - self.thresholds.window_ms.max(self.thresholds.degraded_ms) - 60_000;
        let (rollups, health) = self.history().recent_since(from);
        let holding = alerts::evaluate(&self.thresholds, &rollups, &health, circuits_open, now);
        match alerts::advance(&self.local_alerts, &self.thresholds, &holding, now).await {
            Ok(notes) => self.notify(notes, now).await,
            Err(e) => {
                tracing::error!(error = %e, "local alert evaluation failed");
                0
            }
        }
    }

    /// Gives the database the alerts raised here during an outage: firing
    /// ones carry on (and resolve) in the shared lifecycle, finished ones
    /// become history.
    async fn hand_over_local_alerts(&self) -> Result<(), sqlx::Error> {
        // One at a time, each forgotten only once written: an evaluation
        // cut short (budget) leaves the rest for the next one, and writing
        // one twice is harmless (an open key or an id is not inserted again).
        for a in self.local_alerts.all() {
            self.db.adopt_alert(&a).await?;
            self.local_alerts.remove(&a.id);
        }
        Ok(())
    }

    /// Sends each notification unless another instance sent the same one
    /// (Redis, when configured; without it, or while it is down, a
    /// duplicate beats silence). Returns how many were sent.
    async fn notify(&self, notes: Vec<Notification>, now: i64) -> usize {
        let mut sent = 0;
        for note in notes {
            if let Some(tier) = &self.dedup
                && let Ok(false) = tier
                    .claim_notification(&note.alert.alert_key, note.status, now, self.dedup_window)
                    .await
            {
                tracing::debug!(alert = %note.alert.alert_key, status = note.status, "notification already sent by another instance");
                continue;
            }
            self.notifier.send(note);
            sent += 1;
        }
        sent
    }

    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        self.db.prune_monitoring(now_ms() - self.retention_ms).await
    }

    /// Active and recent alerts; while the database is unreachable, the
    /// ones this instance raised on its own.
    pub async fn alerts(&self) -> Result<AlertsView, sqlx::Error> {
        let open = match self.db.open_alerts().await {
            Ok(open) => open,
            Err(_) if !self.local_alerts.is_empty() => {
                return Ok(AlertsView {
                    active: self
                        .local_alerts
                        .open()
                        .into_iter()
                        .map(AlertView::from)
                        .collect(),
                    recent: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        let active = open.into_iter().map(AlertView::from).collect();
        let recent = self
            .db
            .recent_alerts(now_ms() - 7 * 24 * 3_600_000, 50)
            .await?
            .into_iter()
            .map(AlertView::from)
            .collect();
        Ok(AlertsView { active, recent })
    }

    /// Firing alerts per severity (for the metric): the database's, or this
    /// instance's own while the database is unreachable.
    pub async fn firing_by_severity(&self) -> Vec<(String, u64)> {
        let open = match self.db.open_alerts().await {
            Ok(open) => open,
            Err(_) => self.local_alerts.open(),
        };
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for a in open.into_iter().filter(|a| a.state == "firing") {
            *out.entry(a.severity).or_default() += 1;
        }
        out.into_iter().collect()
    }

    pub async fn health_trends(
        &self,
        component: Option<&str>,
        range: Range,
    ) -> Result<Vec<HealthTrend>, sqlx::Error> {
        let samples = self.samples_since(now_ms() - range.millis()).await?;
        Ok(samples
            .into_iter()
            .filter(|(_, _, c, _, _)| component.is_none_or(|want| want == c))
            .map(|(at, instance, component, status, rt)| HealthTrend {
                component,
                timestamp: rfc3339_from_ms(at),
                status,
                response_time: rt,
                instance,
            })
            .collect())
    }

    /// Linear least-squares trend of the per-minute request rate over the
    /// last 30 minutes, projected 15 and 60 minutes ahead.
    pub async fn scaling(&self) -> Result<Scaling, sqlx::Error> {
        let now = now_ms();
        let from = minute_of(now) - 30 * 60_000;
        let rollups = self.rollups_since(from).await?;
        let mut per_minute: BTreeMap<i64, u64> = BTreeMap::new();
        for (m, _, agg) in &rollups {
            *per_minute.entry(*m).or_default() += agg.requests;
        }
        // Minutes without traffic count as zero; the current (partial)
        // minute is left out.
        let points: Vec<(f64, f64)> = (0..30)
            .map(|i| from + i * 60_000)
            .filter(|m| *m < minute_of(now))
            .map(|m| {
                (
                    (m - from) as f64 / 60_000.0,
                    *per_minute.get(&m).unwrap_or(&0) as f64 / 60.0,
                )
            })
            .collect();
        let n = points.len() as f64;
        let (sx, sy) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n.max(1.0), sy / n.max(1.0));
        let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
            (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
        });
        let slope = if den > 0.0 { num / den } else { 0.0 };
        let at = |minutes_ahead: f64| (my + slope * (30.0 + minutes_ahead - mx)).max(0.0);
        let recent: Vec<f64> = points.iter().rev().take(5).map(|p| p.1).collect();
        let current = recent.iter().sum::<f64>() / (recent.len().max(1) as f64);
        let (f15, f60) = (at(15.0), at(60.0));
        let need = |rate: f64| ((rate / self.capacity_rps).ceil() as u32).max(1);
        Ok(Scaling {
            current_rate: current,
            forecast_15m: f15,
            forecast_60m: f60,
            capacity_per_instance: self.capacity_rps,
            instances_15m: need(f15),
            instances_60m: need(f60),
            method: "least-squares line over the last 30 minutes of per-minute request rates"
                .into(),
        })
    }

    /// Requests, errors and the latest minute per instance, this instance's
    /// unwritten share included.
    async fn instance_totals_since(
        &self,
        from: i64,
    ) -> Result<Vec<(String, i64, i64, i64)>, sqlx::Error> {
        self.collect();
        let _gate = self.flush_gate.read().await;
        let mut totals = self.db.instance_totals_since(from).await?;
        if let Some((req, err, last)) = self.history().pending_totals_since(from) {
            match totals.iter_mut().find(|t| t.0 == self.instance) {
                Some(t) => {
                    t.1 += req;
                    t.2 += err;
                    t.3 = t.3.max(last);
                }
                None => {
                    totals.push((self.instance.clone(), req, err, last));
                    totals.sort_by(|a, b| a.0.cmp(&b.0));
                }
            }
        }
        Ok(totals)
    }

    /// The dashboard's data for a range (all instances).
    pub async fn dashboard(
        &self,
        range: Range,
        health: crate::health::HealthStatus,
        db: &Db,
    ) -> Result<DashboardData, sqlx::Error> {
        let now = now_ms();
        let from = minute_of(now - range.millis());
        let seconds = (now - from) as f64 / 1000.0;
        let rollups = self.rollups_since(from).await?;
        let mut per_route: BTreeMap<String, Agg> = BTreeMap::new();
        let mut overall = Agg::default();
        let step = range.step_ms();
        let mut per_step: BTreeMap<i64, Agg> = BTreeMap::new();
        for (minute, route, agg) in &rollups {
            per_route.entry(route.clone()).or_default().merge(agg);
            overall.merge(agg);
            per_step
                .entry(minute - minute.rem_euclid(step))
                .or_default()
                .merge(agg);
        }
        let mut series = Series::default();
        let mut t = from - from.rem_euclid(step);
        while t <= now {
            let agg = per_step.get(&t).cloned().unwrap_or_default();
            series.timestamps.push(t / 1000);
            series
                .requests_per_sec
                .push(agg.requests as f64 / (step as f64 / 1000.0));
            series.error_rate.push(if agg.requests == 0 {
                0.0
            } else {
                agg.errors as f64 * 100.0 / agg.requests as f64
            });
            series.p95.push(agg.quantile(0.95));
            series.p99.push(agg.quantile(0.99));
            t += step;
        }
        let mut routes: Vec<RouteStats> = per_route
            .into_iter()
            .map(|(r, a)| route_stats(r, &a, seconds))
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.requests));
        let cache = db.query_cache_stats();
        Ok(DashboardData {
            range: range.as_str().into(),
            generated_at: rfc3339_from_ms(now),
            step_seconds: step / 1000,
            overall: route_stats("all".into(), &overall, seconds),
            routes,
            series,
            health,
            cache: CacheView {
                hit_ratio: cache.and_then(|c| {
                    let total = c.hits + c.misses;
                    (total > 0).then(|| c.hits as f64 / total as f64)
                }),
                stats: cache,
            },
            pool: db.stats(),
            alerts: self.alerts().await?,
            scaling: self.scaling().await?,
            instances: self
                .instance_totals_since(from)
                .await?
                .into_iter()
                .map(|(instance, requests, errors, last)| InstanceStats {
                    instance,
                    requests,
                    errors,
                    last_seen: rfc3339_from_ms(last),
                })
                .collect(),
        })
    }
}

/// Runs, until `stop`: keeping every health sample, flushing, alert
/// evaluation and pruning. Flushing and evaluation are separate tasks: a
/// flush waiting on an unreachable database must not hold back the alert
/// that reports it.
pub fn spawn(state: crate::state::AppState, stop: watch::Receiver<bool>) {
    let flush_every = Duration::from_millis(state.config.monitoring.flush_ms.max(50));
    let eval_every = Duration::from_millis(state.config.monitoring.alert_eval_ms.max(50));

    let (s, mut halt) = (state.clone(), stop.clone());
    tokio::spawn(async move {
        let mut rounds = s.health.rounds();
        rounds.mark_changed();
        loop {
            tokio::select! {
                changed = rounds.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    s.monitor.record_health(&s.health);
                }
                _ = crate::lifecycle::stopped(&mut halt) => return,
            }
        }
    });

    let (s, mut halt) = (state.clone(), stop.clone());
    tokio::spawn(async move {
        let mut flush = tokio::time::interval(flush_every);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first prune an hour after start, not at once: a restart loop
        // must not turn into a delete loop.
        let hour = Duration::from_secs(3600);
        let mut prune = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    match s.monitor.flush().await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::warn!("monitoring flush works again; buffered history written");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "monitoring flush failed; history kept in memory until it works");
                        }
                        Err(_) => {}
                    }
                }
                _ = prune.tick() => {
                    match s.monitor.prune().await {
                        Ok(n) if n > 0 => tracing::info!(deleted = n, "monitoring history pruned"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "monitoring prune failed"),
                    }
                }
                // The last flush is the shutdown's, before the pool closes.
                _ = crate::lifecycle::stopped(&mut halt) => return,
            }
        }
    });

    let (s, mut halt) = (state, stop);
    tokio::spawn(async move {
        let mut eval = tokio::time::interval(eval_every);
        eval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = eval.tick() => {
                    let open = s.tiktok.circuit_state() == Some(crate::circuit::CircuitState::Open);
                    let circuits: &[&str] = if open { &["tiktok"] } else { &[] };
                    s.monitor.evaluate_alerts(circuits).await;
                }
                _ = crate::lifecycle::stopped(&mut halt) => return,
            }
        }
    });
}
