//! Monitoring history: rollups, health samples, alerts, leases. SQL only.

use sqlx::Row;

use super::Db;
use super::rollup::{Agg, RollupRow, SampleRow};

/// Where an alert is in its life. Stored as its [`as_str`](Self::as_str)
/// text, which the API shows as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, not yet for as long as the rule asks.
    Pending,
    Firing,
    /// Fired, and the condition has cleared.
    Resolved,
    /// Cleared before it fired.
    Cancelled,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => AlertState::Pending,
            "firing" => AlertState::Firing,
            "resolved" => AlertState::Resolved,
            "cancelled" => AlertState::Cancelled,
            _ => return None,
        })
    }

    /// Pending or firing: at most one such alert per key.
    pub fn is_open(self) -> bool {
        matches!(self, AlertState::Pending | AlertState::Firing)
    }
}

/// One instance's share of the dashboard's totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceTotals {
    pub instance: String,
    pub requests: i64,
    pub errors: i64,
    /// The latest minute it wrote (epoch ms).
    pub last_minute: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRow {
    pub id: String,
    pub rule: String,
    #[serde(rename = "key")]
    pub alert_key: String,
    pub severity: String,
    pub state: AlertState,
    pub summary: String,
    #[serde(skip)]
    pub started_at: i64,
    #[serde(skip)]
    pub fired_at: Option<i64>,
    #[serde(skip)]
    pub resolved_at: Option<i64>,
    #[serde(skip)]
    pub last_notified_at: Option<i64>,
    pub notifications: i64,
}

fn alert_from(r: &sqlx::any::AnyRow) -> Result<AlertRow, sqlx::Error> {
    Ok(AlertRow {
        id: r.try_get("id")?,
        rule: r.try_get("rule")?,
        alert_key: r.try_get("alert_key")?,
        severity: r.try_get("severity")?,
        state: {
            let state: String = r.try_get("state")?;
            AlertState::parse(&state).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown alert state {state:?}").into())
            })?
        },
        summary: r.try_get("summary")?,
        started_at: r.try_get("started_at")?,
        fired_at: r.try_get("fired_at")?,
        resolved_at: r.try_get("resolved_at")?,
        last_notified_at: r.try_get("last_notified_at")?,
        notifications: r.try_get("notifications")?,
    })
}

/// Binds an alert's columns as $1..$11 in [`ALERT_COLUMNS`] order.
fn bind_alert<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    a: &'q AlertRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(&a.id)
        .bind(&a.rule)
        .bind(&a.alert_key)
        .bind(&a.severity)
        .bind(a.state.as_str())
        .bind(&a.summary)
        .bind(a.started_at)
        .bind(a.fired_at)
        .bind(a.resolved_at)
        .bind(a.last_notified_at)
        .bind(a.notifications)
}

const ALERT_COLUMNS: &str = "id, rule, alert_key, severity, state, summary, started_at, fired_at, resolved_at, last_notified_at, notifications";

/// Records the flush batch `batch` in its own transaction and commits: every
/// kind of monitoring flush (rollups and samples, error groups, SLO slots)
/// ends this way, so that [`Db::batch_written`] can tell afterwards whether
/// a flush whose answer was lost committed.
pub(super) async fn commit_batch(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    batch: &str,
    instance: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO monitoring_batches (id, instance, written_at) VALUES ($1, $2, $3)")
        .bind(batch)
        .bind(instance)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

impl Db {
    /// Writes one flush in one transaction: rollup deltas added to this
    /// instance's rows, health samples, and the batch's id, by which
    /// [`batch_written`](Self::batch_written) tells afterwards whether a
    /// flush whose answer was lost committed.
    ///
    /// Rollup rows are written in the order given (callers sort by minute,
    /// then route: one order for every writer, so two transactions never
    /// wait on each other's rows in opposite orders). Only this instance
    /// writes its rows, so reading them first in the same transaction and
    /// writing the sums back is exact.
    pub async fn write_monitoring_batch(
        &self,
        batch: &str,
        instance: &str,
        rollups: &[RollupRow],
        samples: &[SampleRow],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        super::tiers::lock_tiers(self.backend(), &mut tx, false).await?;
        let until = super::tiers::watermarks_in(&mut tx).await?;
        if let (Some(first), Some(last)) = (rollups.first(), rollups.last()) {
            let (from, to) = (first.minute.min(last.minute), first.minute.max(last.minute));
            let existing = sqlx::query(
                "SELECT minute, route, requests, errors, buckets FROM metric_rollups \
                 WHERE instance = $1 AND minute >= $2 AND minute <= $3",
            )
            .bind(instance)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            let mut stored = std::collections::HashMap::new();
            for r in existing {
                let minute: i64 = r.try_get("minute")?;
                let route: String = r.try_get("route")?;
                let requests: i64 = r.try_get("requests")?;
                let errors: i64 = r.try_get("errors")?;
                let buckets: String = r.try_get("buckets")?;
                stored.insert(
                    (minute, route),
                    Agg::from_parts(requests.max(0) as u64, errors.max(0) as u64, &buckets),
                );
            }
            for RollupRow {
                minute,
                route,
                agg: delta,
            } in rollups
            {
                let mut agg = stored.remove(&(*minute, route.clone())).unwrap_or_default();
                agg.merge(delta);
                sqlx::query(
                    "INSERT INTO metric_rollups (minute, instance, route, requests, errors, buckets) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (minute, instance, route) DO UPDATE SET requests = excluded.requests, \
                     errors = excluded.errors, buckets = excluded.buckets",
                )
                .bind(*minute)
                .bind(instance)
                .bind(route)
                .bind(agg.requests as i64)
                .bind(agg.errors as i64)
                .bind(agg.buckets_json())
                .execute(&mut *tx)
                .await?;
            }
            if first.minute.min(last.minute) < until.rollups {
                super::tiers::add_late_rollups(&mut tx, instance, rollups, until.rollups).await?;
            }
        }
        for sample in samples {
            let SampleRow {
                at,
                instance,
                component,
                status,
                response_time_ms: rt,
            } = sample;
            // A sample written twice (a retried flush) is kept once, and
            // counted in the health tier once.
            let inserted = sqlx::query(
                "INSERT INTO health_samples (at, instance, component, status, response_time_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (at, instance, component) DO NOTHING",
            )
            .bind(*at)
            .bind(instance)
            .bind(component)
            .bind(status)
            .bind(*rt)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 && *at < until.health {
                super::tiers::add_late_sample(&mut tx, sample).await?;
            }
        }
        commit_batch(tx, batch, instance, now).await
    }

    /// Whether the flush `batch` committed.
    pub async fn batch_written(&self, batch: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM monitoring_batches WHERE id = $1")
            .bind(batch)
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }

    /// Rollups of every instance since `from` (epoch ms), merged per
    /// (minute, route).
    pub(crate) async fn rollups_since(&self, from: i64) -> Result<Vec<RollupRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT minute, route, requests, errors, buckets FROM metric_rollups WHERE minute >= $1 ORDER BY minute",
        )
        .bind(from)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<RollupRow> = Vec::new();
        let mut index: std::collections::HashMap<(i64, String), usize> =
            std::collections::HashMap::new();
        for r in rows {
            let minute: i64 = r.try_get("minute")?;
            let route: String = r.try_get("route")?;
            let agg = super::tiers::agg_from(&r)?;
            match index.get(&(minute, route.clone())) {
                Some(&i) => {
                    out[i].agg.merge(&agg);
                }
                None => {
                    index.insert((minute, route.clone()), out.len());
                    out.push(RollupRow { minute, route, agg });
                }
            }
        }
        Ok(out)
    }

    /// Health samples since `from`, oldest first.
    pub(crate) async fn health_samples_since(
        &self,
        from: i64,
    ) -> Result<Vec<SampleRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT at, instance, component, status, response_time_ms FROM health_samples WHERE at >= $1 ORDER BY at",
        )
        .bind(from)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(super::tiers::sample_from).collect()
    }

    /// Deletes history older than `before`, and the per-minute rollups and
    /// raw health samples older than `fine_before` that their aggregated
    /// tier holds (below its watermark: what compaction has not taken yet
    /// stays until `before`); returns rows deleted.
    pub async fn prune_monitoring(
        &self,
        before: i64,
        fine_before: i64,
    ) -> Result<u64, sqlx::Error> {
        let until = self.tier_watermarks().await?;
        let fine = |watermark: i64| before.max(fine_before.min(watermark));
        let mut n = 0;
        for (sql, bound) in [
            (
                "DELETE FROM metric_rollups WHERE minute < $1",
                fine(until.rollups),
            ),
            (
                "DELETE FROM health_samples WHERE at < $1",
                fine(until.health),
            ),
            ("DELETE FROM metric_rollups_hourly WHERE hour < $1", before),
            ("DELETE FROM health_rollups WHERE bucket < $1", before),
            (
                "DELETE FROM alerts WHERE state IN ('resolved', 'cancelled') AND started_at < $1",
                before,
            ),
            (
                "DELETE FROM monitoring_batches WHERE written_at < $1",
                before,
            ),
        ] {
            n += sqlx::query(sql)
                .bind(bound)
                .execute(self.pool())
                .await?
                .rows_affected();
        }
        Ok(n)
    }

    /// Alerts pending or firing.
    pub async fn open_alerts(&self) -> Result<Vec<AlertRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE state IN ('pending', 'firing') ORDER BY started_at DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(alert_from).collect()
    }

    /// Alerts that fired and resolved since `from`, newest first.
    pub async fn recent_alerts(&self, from: i64, limit: i64) -> Result<Vec<AlertRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'resolved' AND resolved_at >= $1 \
             ORDER BY resolved_at DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(alert_from).collect()
    }

    pub async fn insert_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        bind_alert(
            sqlx::query(
                "INSERT INTO alerts (id, rule, alert_key, severity, state, summary, started_at, fired_at, \
                 resolved_at, last_notified_at, notifications) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ),
            a,
        )
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records an alert that an instance raised on its own while the
    /// database was unreachable: a firing one only when no alert with its
    /// key is open already (another instance may have handed over the same
    /// condition), a finished one as history. True when it was written.
    pub async fn adopt_alert(&self, a: &AlertRow) -> Result<bool, sqlx::Error> {
        let open = a.state.is_open();
        let sql = if open {
            "INSERT INTO alerts (id, rule, alert_key, severity, state, summary, started_at, fired_at, \
             resolved_at, last_notified_at, notifications) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE NOT EXISTS \
             (SELECT 1 FROM alerts WHERE alert_key = $3 AND state IN ('pending', 'firing'))"
        } else {
            "INSERT INTO alerts (id, rule, alert_key, severity, state, summary, started_at, fired_at, \
             resolved_at, last_notified_at, notifications) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING"
        };
        let n = bind_alert(sqlx::query(sql), a)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    pub async fn update_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE alerts SET state = $1, summary = $2, fired_at = $3, resolved_at = $4, last_notified_at = $5, \
             notifications = $6 WHERE id = $7",
        )
        .bind(a.state.as_str())
        .bind(&a.summary)
        .bind(a.fired_at)
        .bind(a.resolved_at)
        .bind(a.last_notified_at)
        .bind(a.notifications)
        .bind(&a.id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Gives up a lease this holder has, so another takes it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Takes or renews a named lease for `holder` until `until`; true when
    /// this holder has it (another holder's unexpired lease wins).
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, sqlx::Error> {
        let n = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}
