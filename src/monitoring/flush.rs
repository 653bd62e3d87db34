//! The monitor's side of the history: what requests and health rounds
//! recorded, moved into memory, written to the database in batches by the
//! background flush, and merged back into every read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::history::{ComponentSample, Pending, RollupRow, SampleRow, merge_rollups};
use super::{ALERT_LEASE, Monitor};
use crate::health::HealthSampler;
use crate::time_fmt::now_ms;

/// The error of a database call that failed or ran out of its budget (a
/// budget past is reported as a timeout, as the pool would).
pub(super) fn failure<T>(
    r: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
) -> sqlx::Error {
    match r {
        Ok(Err(e)) => e,
        _ => sqlx::Error::PoolTimedOut,
    }
}

/// Rows of each kind per flush transaction: a long outage's backlog goes
/// out in short transactions, reads interleaved.
const FLUSH_BATCH_ROWS: usize = 500;

/// A flush batch whose commit is not known to have happened: looked up by
/// its id before anything else is written.
pub(super) struct InDoubtBatch {
    id: String,
    rows: Pending,
}

impl Monitor {
    /// Moves what requests recorded since the last call into the history.
    pub(super) fn collect(&self) {
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
            .map(|(c, _)| ComponentSample {
                component: c.name.clone(),
                status: c.status.as_str().to_owned(),
                response_ms: c.response_time as i64,
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
        self.flush_error_groups().await?;
        let dropped = self.history().take_dropped();
        if dropped > 0 {
            tracing::warn!(
                rows = dropped,
                "monitoring history beyond the outage buffer was dropped (oldest first)"
            );
        }
        self.flush_slo().await?;
        loop {
            // The gate is taken per batch, so that reads get through
            // between the batches of a long outage's backlog.
            let _gate = self.flush_gate.write().await;
            let in_doubt = self.in_doubt().take();
            if let Some(doubt) = in_doubt {
                match tokio::time::timeout(self.flush_budget, self.db.batch_written(&doubt.id))
                    .await
                {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => self.history().restore(doubt.rows),
                    failed => {
                        *self.in_doubt() = Some(doubt);
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
                    *self.in_doubt() = Some(InDoubtBatch { id: batch, rows });
                    return Err(failure(failed));
                }
            }
        }
    }

    fn in_doubt(&self) -> std::sync::MutexGuard<'_, Option<InDoubtBatch>> {
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
    pub(super) async fn rollups_since(&self, from: i64) -> Result<Vec<RollupRow>, sqlx::Error> {
        self.collect();
        let _gate = self.flush_gate.read().await;
        let stored = self.db.rollups_since(from).await?;
        let unwritten = self.history().pending_rollups_since(from);
        Ok(merge_rollups(stored, unwritten))
    }

    /// Rollups of every instance from `from` on, per hour below the
    /// hourly tier's watermark when `hourly`, per minute above it, with
    /// what this instance has not written yet.
    pub(super) async fn tiered_rollups_since(
        &self,
        from: i64,
        hourly: bool,
    ) -> Result<Vec<RollupRow>, sqlx::Error> {
        self.collect();
        let _gate = self.flush_gate.read().await;
        let stored = self.db.tiered_rollups_since(from, hourly).await?;
        let unwritten = self.history().pending_rollups_since(from);
        Ok(merge_rollups(stored, unwritten))
    }

    /// Health samples of every instance from `from` on, oldest first.
    pub(super) async fn samples_since(&self, from: i64) -> Result<Vec<SampleRow>, sqlx::Error> {
        let _gate = self.flush_gate.read().await;
        let mut samples = self.db.health_samples_since(from).await?;
        samples.extend(self.history().pending_samples_since(from));
        samples.sort_by(|a, b| {
            (a.at, &a.instance, &a.component).cmp(&(b.at, &b.instance, &b.component))
        });
        samples.dedup_by(|a, b| {
            (a.at, &a.instance, &a.component) == (b.at, &b.instance, &b.component)
        });
        Ok(samples)
    }

    /// One background flush round; logs when flushing starts failing and
    /// when it works again (`failing` carries that between rounds), not at
    /// every failed round of an outage.
    pub(super) async fn flush_and_report(&self, failing: &AtomicBool) {
        match self.flush().await {
            Ok(()) => {
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!("monitoring flush works again; buffered history written");
                }
            }
            Err(e) => {
                if !failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "monitoring flush failed; history kept in memory until it works");
                }
            }
        }
    }

    /// Compacts completed hours of minute rollups and completed health
    /// buckets into their aggregated tiers (any instance may; the
    /// watermark makes a second run a no-op).
    pub async fn compact(&self) -> Result<crate::store::tiers::Compacted, sqlx::Error> {
        self.db.compact_monitoring(now_ms()).await
    }

    /// Compacts, then deletes history past the retention, and minute rows
    /// and raw samples past the minute retention that the aggregated tiers
    /// hold.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        self.compact().await?;
        let now = now_ms();
        let before = now - self.retention_ms;
        let history = self
            .db
            .prune_monitoring(before, now - self.minute_retention_ms)
            .await?;
        Ok(history + self.db.prune_error_groups(before).await? + self.prune_slo().await?)
    }
}
