//! Alert evaluation: shared through the database when it answers (one
//! instance, the lease holder, evaluates for all), on this instance's own
//! history when it does not; and the alert views.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use super::alerts::{self, AlertState, Notification, Severity};
use super::metrics::FiringCount;
use super::rollup::minute_of;
use super::views::{AlertView, AlertsView};
use super::{ALERT_LEASE, Monitor};
use crate::time_fmt::now_ms;

impl Monitor {
    /// One alert evaluation. Through the database (only the instance
    /// holding the lease evaluates) when it answers within the budget; on
    /// this instance's own history otherwise, so that an outage of the
    /// database is itself reported.
    pub async fn evaluate_alerts(
        &self,
        circuits_open: &[&str],
        critical: &HashSet<String>,
    ) -> usize {
        let _evaluating = self.evaluation.lock().await;
        let now = now_ms();
        let was_local = self.evaluating_locally.load(Ordering::Relaxed);
        let mut sent = 0;
        if was_local {
            // Report first: finding out whether the database is back may
            // take the whole budget.
            sent += self.evaluate_locally(now, circuits_open, critical).await;
        }
        let shared = tokio::time::timeout(
            self.shared_budget,
            self.evaluate_shared(now, circuits_open, critical),
        )
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
                    sent += self.evaluate_locally(now, circuits_open, critical).await;
                }
                sent
            }
        }
    }

    async fn evaluate_shared(
        &self,
        now: i64,
        circuits_open: &[&str],
        critical: &HashSet<String>,
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
        let mut holding = alerts::evaluate(
            &self.thresholds,
            &rollups,
            &health,
            circuits_open,
            critical,
            now,
        );
        holding.extend(self.new_error_conditions(now).await?);
        holding.extend(self.slo_conditions_shared(now).await?);
        let notes = alerts::advance(&self.db, &self.thresholds, &holding, now).await?;
        Ok(self.notify(notes, now).await)
    }

    async fn evaluate_locally(
        &self,
        now: i64,
        circuits_open: &[&str],
        critical: &HashSet<String>,
    ) -> usize {
        self.collect();
        let from = now - self.thresholds.window_ms.max(self.thresholds.degraded_ms) - 60_000;
        let (rollups, health) = self.history().recent_since(from);
        let mut holding = alerts::evaluate(
            &self.thresholds,
            &rollups,
            &health,
            circuits_open,
            critical,
            now,
        );
        holding.extend(self.slo_conditions_local(now));
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
                    .claim_notification(
                        &note.alert.alert_key,
                        note.status.as_str(),
                        now,
                        self.dedup_window,
                    )
                    .await
            {
                tracing::debug!(alert = %note.alert.alert_key, status = note.status.as_str(), "notification already sent by another instance");
                continue;
            }
            self.notifier.send(note);
            sent += 1;
        }
        sent
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
    pub async fn firing_by_severity(&self) -> Vec<FiringCount> {
        let open = match self.db.open_alerts().await {
            Ok(open) => open,
            Err(_) => self.local_alerts.open(),
        };
        let mut out: BTreeMap<Severity, u64> = BTreeMap::new();
        for a in open.iter().filter(|a| a.state == AlertState::Firing) {
            // A severity this version does not know has no series.
            if let Some(severity) = Severity::parse(&a.severity) {
                *out.entry(severity).or_default() += 1;
            }
        }
        out.into_iter()
            .map(|(severity, count)| FiringCount { severity, count })
            .collect()
    }
}
