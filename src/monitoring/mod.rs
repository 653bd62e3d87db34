//! Monitoring: route metrics and `/metrics` ([`metrics`]), per-minute
//! rollups and health samples kept in the database so history survives
//! restarts and instances add up ([`rollup`]), alerting ([`alerts`]), and
//! the data behind the dashboard, health trends and the scaling forecast
//! ([`Monitor`]), and error groups ([`errors`]).
//!
//! Monitoring must keep working through the outage it reports. So requests
//! never write monitoring rows (reads merge what this instance has not
//! written yet, [`history`]); one background task writes, in one key order,
//! and keeps what it could not write for the next attempt; and alerts are
//! evaluated from this instance's memory while the database is unreachable,
//! with notifications deduplicated across instances through Redis when it
//! is configured.

pub(crate) mod alerts;
mod dashboard;
pub(crate) mod errors;
mod evaluation;
mod flush;
pub(crate) mod histogram;
pub(crate) mod history;
pub(crate) mod metrics;
pub(crate) mod rollup;
pub(crate) mod slo;
mod views;

pub(crate) use errors::ErrorGroup;
pub use views::Range;
pub(crate) use views::{AlertsView, DashboardData, HealthTrend, Scaling};

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::sync::watch;

use crate::circuit::CircuitState;
use crate::config::MonitoringSettings;
use crate::health::HealthSampler;
use crate::lifecycle::{FirstRound, spawn_periodic};
use crate::store::Db;
use alerts::{LocalAlerts, Notifier, Thresholds};
use flush::InDoubtBatch;
use history::LocalHistory;
use metrics::HttpMetrics;

/// Per-thread copies of some state (shards), each alone on its cache
/// line(s) (crossbeam's `CachePadded`: 128 bytes on x86-64, where
/// adjacent-line prefetch pairs lines), so the
/// runtime's workers, recording on every request, neither take turns on
/// one lock nor pull each other's lines back and forth between cores. A
/// thread gets a shard by a thread-local index, round robin in order of
/// first use; threads past the shard count share, which stays correct.
/// Readers (a scrape, a flush) go through every shard.
pub(crate) struct PerThread<T> {
    shards: Box<[CachePadded<T>]>,
}

impl<T: Default> PerThread<T> {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| CachePadded::default()).collect(),
        }
    }
}

impl<T> PerThread<T> {
    /// This thread's shard.
    pub(crate) fn mine(&self) -> &T {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        thread_local! {
            static INDEX: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        &self.shards[INDEX.with(|i| *i) % self.shards.len()]
    }

    /// Every shard.
    pub(crate) fn all(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|s| &**s)
    }
}

/// This instance's monitoring: its request history on the way to the
/// database, the reads that merge it in, and alert evaluation.
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
    /// How long per-minute rollups and raw health samples are kept (and
    /// read); older history comes from the aggregated tiers.
    minute_retention_ms: i64,
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
    in_doubt: std::sync::Mutex<Option<InDoubtBatch>>,
    /// The error groups' flush state ([`errors`]).
    error_flush: errors::ErrorFlush,
    /// Alerts raised while the database was unreachable.
    local_alerts: LocalAlerts,
    /// SLO slots on their way to the database, and the burn-rate alerts'
    /// settings.
    slo: slo::SloState,
    /// Whether the last evaluation could not use the database.
    evaluating_locally: AtomicBool,
    last_health_sample: AtomicI64,
    flush_every: Duration,
    evaluate_every: Duration,
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
        metrics.errors.set_instance(&instance);
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
            // History never outlives the retention, whatever this says.
            minute_retention_ms: config.minute_retention_ms.min(config.retention_ms) as i64,
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
            error_flush: Default::default(),
            local_alerts: LocalAlerts::default(),
            slo: slo::SloState::new(slo::SloPolicy::from_config(config)),
            evaluating_locally: AtomicBool::new(false),
            last_health_sample: AtomicI64::new(0),
            flush_every: Duration::from_millis(config.flush_ms.max(50)),
            evaluate_every: Duration::from_millis(config.alert_eval_ms.max(50)),
        })
    }

    fn history(&self) -> std::sync::MutexGuard<'_, LocalHistory> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How often completed hours and health buckets are compacted: the
/// aggregated tiers trail the clock by at most this much past the hour.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// The lease whose holder evaluates alerts for every instance.
const ALERT_LEASE: &str = "alert-evaluator";

/// Runs, until `stop`: keeping every health sample, flushing, alert
/// evaluation and pruning. Flushing and evaluation are separate tasks: a
/// flush waiting on an unreachable database must not hold back the alert
/// that reports it. `tiktok_circuit` reads the TikTok circuit breaker's
/// state at each evaluation (None without a TikTok client);
/// `critical_routes` are the route templates whose 5xx rate pages someone.
pub(crate) fn spawn(
    monitor: Arc<Monitor>,
    health: Arc<HealthSampler>,
    tiktok_circuit: impl Fn() -> Option<CircuitState> + Send + Sync + 'static,
    critical_routes: HashSet<String>,
    stop: watch::Receiver<bool>,
) {
    // Waits on the sampler's rounds, not on a clock: every round is kept.
    let (m, mut halt) = (Arc::clone(&monitor), stop.clone());
    tokio::spawn(async move {
        let mut rounds = health.rounds();
        rounds.mark_changed();
        loop {
            tokio::select! {
                changed = rounds.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    m.record_health(&health);
                }
                _ = crate::lifecycle::stopped(&mut halt) => return,
            }
        }
    });

    // The last flush is the shutdown's, before the pool closes.
    let failing = Arc::new(AtomicBool::new(false));
    let m = Arc::clone(&monitor);
    spawn_periodic(
        monitor.flush_every,
        FirstRound::Now,
        stop.clone(),
        move || {
            let (m, failing) = (Arc::clone(&m), Arc::clone(&failing));
            async move { m.flush_and_report(&failing).await }
        },
    );

    // The first prune an hour after start, not at once: a restart loop
    // must not turn into a delete loop.
    let m = Arc::clone(&monitor);
    spawn_periodic(
        Duration::from_secs(3600),
        FirstRound::AfterOnePeriod,
        stop.clone(),
        move || {
            let m = Arc::clone(&m);
            async move {
                match m.prune().await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "monitoring history pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "monitoring prune failed"),
                }
            }
        },
    );

    // Compaction only adds aggregated rows (idempotent, any instance), so
    // it may start at once: a restart catches up on the hours it missed.
    let m = Arc::clone(&monitor);
    spawn_periodic(COMPACT_EVERY, FirstRound::Now, stop.clone(), move || {
        let m = Arc::clone(&m);
        async move {
            if let Err(e) = m.compact().await {
                tracing::warn!(error = %e, "monitoring history compaction failed");
            }
        }
    });

    let m = Arc::clone(&monitor);
    let tiktok_circuit = Arc::new(tiktok_circuit);
    let critical_routes = Arc::new(critical_routes);
    spawn_periodic(monitor.evaluate_every, FirstRound::Now, stop, move || {
        let (m, tiktok_circuit) = (Arc::clone(&m), Arc::clone(&tiktok_circuit));
        let critical_routes = Arc::clone(&critical_routes);
        async move {
            let open = tiktok_circuit() == Some(CircuitState::Open);
            let circuits: &[&str] = if open { &["tiktok"] } else { &[] };
            m.evaluate_alerts(circuits, &critical_routes).await;
        }
    });
}
