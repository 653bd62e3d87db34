//! Monitoring history in tiers. SQL only.
//!
//! Route rollups are written per minute and compacted, per completed hour,
//! into per-hour rows with the exact sums (requests, errors, latency
//! buckets); health samples are compacted per 10 minutes into counts per
//! status and response-time sum and maximum. A watermark per tier
//! (`monitoring_tiers.until`) says how far the aggregated tier is complete:
//! compaction advances it in the transaction that writes the aggregated
//! rows, so a crash leaves either both or neither, and running it again, or
//! from another instance, finds nothing left to do. A flush that writes
//! below the watermark (an outage's backlog) adds to both tiers in its own
//! transaction. Reads take the aggregated tier below the watermark and the
//! fine one above it, so each request and sample is counted once.
//!
//! On PostgreSQL a flush holds a shared advisory lock and compaction the
//! exclusive one, so a compaction never sums the minutes of an hour while a
//! flush that has read the old watermark is still writing into it. On
//! SQLite both are write transactions (`BEGIN IMMEDIATE`), which already
//! run one at a time.

use std::collections::BTreeMap;

use sqlx::Row;

use super::rollup::{Agg, RollupRow, SampleRow};
use super::{Backend, Db};

pub(crate) const HOUR_MS: i64 = 3_600_000;
/// Width of one aggregated health row.
pub(crate) const HEALTH_BUCKET_MS: i64 = 600_000;
/// Health buckets compacted per transaction (one hour): short
/// transactions, flushes interleaved, when a backlog is compacted.
const HEALTH_BUCKETS_PER_STEP: i64 = 6;
/// The advisory lock key of the tiers (any fixed number no other lock uses).
const TIER_LOCK: i64 = 0x0068_756e_7469_6572;

pub(crate) const ROLLUP_TIER: &str = "rollups";
pub(crate) const HEALTH_TIER: &str = "health";

pub(crate) fn hour_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

pub(crate) fn health_bucket_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(HEALTH_BUCKET_MS)
}

/// How far each tier is complete (epoch ms; 0 before any compaction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermarks {
    pub rollups: i64,
    pub health: i64,
}

/// The samples of one component on one instance over one health bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HealthBucket {
    /// Start of the bucket, epoch ms.
    pub bucket: i64,
    pub instance: String,
    pub component: String,
    pub samples: i64,
    pub healthy: i64,
    pub degraded: i64,
    pub unhealthy: i64,
    pub response_sum: i64,
    pub response_max: i64,
}

impl HealthBucket {
    /// Adds one raw sample.
    pub(crate) fn add(&mut self, s: &SampleRow) {
        self.samples += 1;
        match s.status.as_str() {
            "healthy" => self.healthy += 1,
            "degraded" => self.degraded += 1,
            _ => self.unhealthy += 1,
        }
        self.response_sum += s.response_time_ms;
        self.response_max = self.response_max.max(s.response_time_ms);
    }

    pub(crate) fn merge(&mut self, o: &HealthBucket) {
        self.samples += o.samples;
        self.healthy += o.healthy;
        self.degraded += o.degraded;
        self.unhealthy += o.unhealthy;
        self.response_sum += o.response_sum;
        self.response_max = self.response_max.max(o.response_max);
    }
}

fn bucket_from(r: &sqlx::any::AnyRow) -> Result<HealthBucket, sqlx::Error> {
    Ok(HealthBucket {
        bucket: r.try_get("bucket")?,
        instance: r.try_get("instance")?,
        component: r.try_get("component")?,
        samples: r.try_get("samples")?,
        healthy: r.try_get("healthy")?,
        degraded: r.try_get("degraded")?,
        unhealthy: r.try_get("unhealthy")?,
        response_sum: r.try_get("response_sum")?,
        response_max: r.try_get("response_max")?,
    })
}

pub(super) fn sample_from(r: &sqlx::any::AnyRow) -> Result<SampleRow, sqlx::Error> {
    Ok(SampleRow {
        at: r.try_get("at")?,
        instance: r.try_get("instance")?,
        component: r.try_get("component")?,
        status: r.try_get("status")?,
        response_time_ms: r.try_get("response_time_ms")?,
    })
}

pub(super) fn agg_from(r: &sqlx::any::AnyRow) -> Result<Agg, sqlx::Error> {
    let requests: i64 = r.try_get("requests")?;
    let errors: i64 = r.try_get("errors")?;
    let buckets: String = r.try_get("buckets")?;
    Ok(Agg::from_parts(
        requests.max(0) as u64,
        errors.max(0) as u64,
        &buckets,
    ))
}

/// Both watermarks, read in `tx`.
pub(super) async fn watermarks_in(tx: &mut sqlx::AnyConnection) -> Result<Watermarks, sqlx::Error> {
    let rows = sqlx::query("SELECT name, until FROM monitoring_tiers")
        .fetch_all(&mut *tx)
        .await?;
    let mut w = Watermarks::default();
    for r in rows {
        let name: String = r.try_get("name")?;
        let until: i64 = r.try_get("until")?;
        match name.as_str() {
            ROLLUP_TIER => w.rollups = until,
            HEALTH_TIER => w.health = until,
            _ => {}
        }
    }
    Ok(w)
}

/// Excludes compaction from a flush's transaction (PostgreSQL; SQLite's
/// write transactions are one at a time already). `exclusive` for the
/// compaction.
pub(super) async fn lock_tiers(
    backend: Backend,
    tx: &mut sqlx::AnyConnection,
    exclusive: bool,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        let sql = if exclusive {
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l"
        } else {
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock_shared($1)) AS l"
        };
        sqlx::query(sql).bind(TIER_LOCK).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Adds rollup deltas of minutes below the watermark to the hourly tier
/// (inside the flush's transaction, which also adds them to the minutes).
pub(super) async fn add_late_rollups(
    tx: &mut sqlx::AnyConnection,
    instance: &str,
    rollups: &[RollupRow],
    until: i64,
) -> Result<(), sqlx::Error> {
    let mut late: BTreeMap<(i64, String), (Agg, i64)> = BTreeMap::new();
    for r in rollups.iter().filter(|r| r.minute < until) {
        let e = late
            .entry((hour_of(r.minute), r.route.clone()))
            .or_insert_with(|| (Agg::default(), r.minute));
        e.0.merge(&r.agg);
        e.1 = e.1.max(r.minute);
    }
    for ((hour, route), (delta, last)) in late {
        let existing = sqlx::query(
            "SELECT requests, errors, buckets, last_minute FROM metric_rollups_hourly \
             WHERE hour = $1 AND instance = $2 AND route = $3",
        )
        .bind(hour)
        .bind(instance)
        .bind(&route)
        .fetch_optional(&mut *tx)
        .await?;
        let (mut agg, mut last_minute) = (Agg::default(), last);
        if let Some(r) = existing {
            agg = agg_from(&r)?;
            last_minute = last_minute.max(r.try_get("last_minute")?);
        }
        agg.merge(&delta);
        upsert_hourly(&mut *tx, hour, instance, &route, &agg, last_minute).await?;
    }
    Ok(())
}

/// Adds one sample below the watermark to the health tier.
pub(super) async fn add_late_sample(
    tx: &mut sqlx::AnyConnection,
    s: &SampleRow,
) -> Result<(), sqlx::Error> {
    let mut b = HealthBucket::default();
    b.add(s);
    sqlx::query(
        "INSERT INTO health_rollups (component, bucket, instance, samples, healthy, degraded, \
         unhealthy, response_sum, response_max) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (component, bucket, instance) DO UPDATE SET \
         samples = health_rollups.samples + excluded.samples, \
         healthy = health_rollups.healthy + excluded.healthy, \
         degraded = health_rollups.degraded + excluded.degraded, \
         unhealthy = health_rollups.unhealthy + excluded.unhealthy, \
         response_sum = health_rollups.response_sum + excluded.response_sum, \
         response_max = CASE WHEN excluded.response_max > health_rollups.response_max \
         THEN excluded.response_max ELSE health_rollups.response_max END",
    )
    .bind(&s.component)
    .bind(health_bucket_of(s.at))
    .bind(&s.instance)
    .bind(b.samples)
    .bind(b.healthy)
    .bind(b.degraded)
    .bind(b.unhealthy)
    .bind(b.response_sum)
    .bind(b.response_max)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn upsert_hourly(
    tx: &mut sqlx::AnyConnection,
    hour: i64,
    instance: &str,
    route: &str,
    agg: &Agg,
    last_minute: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO metric_rollups_hourly (hour, instance, route, requests, errors, buckets, last_minute) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (hour, instance, route) DO UPDATE SET requests = excluded.requests, \
         errors = excluded.errors, buckets = excluded.buckets, last_minute = excluded.last_minute",
    )
    .bind(hour)
    .bind(instance)
    .bind(route)
    .bind(agg.requests as i64)
    .bind(agg.errors as i64)
    .bind(agg.buckets_json())
    .bind(last_minute)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What one compaction run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Hourly rows written.
    pub hourly_rows: u64,
    /// Health rows written.
    pub health_rows: u64,
}

impl Db {
    /// Both watermarks.
    pub async fn tier_watermarks(&self) -> Result<Watermarks, sqlx::Error> {
        let mut conn = self.pool().acquire().await?;
        watermarks_in(&mut conn).await
    }

    /// The rollup watermark when a read takes hourly rows, else the
    /// earliest time (minute rows only).
    async fn hourly_until(&self, hourly: bool) -> Result<i64, sqlx::Error> {
        Ok(if hourly {
            self.tier_watermarks().await?.rollups
        } else {
            i64::MIN
        })
    }

    /// Compacts every completed hour of minute rows before `now`'s hour
    /// and every completed health bucket before `now`'s, one hour per
    /// transaction. Idempotent; any instance may run it.
    pub async fn compact_monitoring(&self, now: i64) -> Result<Compacted, sqlx::Error> {
        let mut done = Compacted::default();
        while let Some(n) = self.compact_rollup_hour(hour_of(now)).await? {
            done.hourly_rows += n;
        }
        while let Some(n) = self.compact_health_step(health_bucket_of(now)).await? {
            done.health_rows += n;
        }
        Ok(done)
    }

    /// Compacts the next hour with minute rows below `upto` (hour-aligned)
    /// and advances the watermark past it; None when the tier is complete
    /// up to `upto`.
    async fn compact_rollup_hour(&self, upto: i64) -> Result<Option<u64>, sqlx::Error> {
        // Checked outside a write transaction first: mostly nothing to do.
        if self.tier_watermarks().await?.rollups >= upto {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        lock_tiers(self.backend(), &mut tx, true).await?;
        let until = watermarks_in(&mut tx).await?.rollups;
        if until >= upto {
            return Ok(None);
        }
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(minute) FROM metric_rollups WHERE minute >= $1 AND minute < $2",
        )
        .bind(until)
        .bind(upto)
        .fetch_one(&mut *tx)
        .await?;
        let (end, written) = match next {
            None => (upto, 0),
            Some(first) => {
                let hour = hour_of(first);
                let rows = sqlx::query(
                    "SELECT minute, instance, route, requests, errors, buckets FROM metric_rollups \
                     WHERE minute >= $1 AND minute < $2",
                )
                .bind(hour)
                .bind(hour + HOUR_MS)
                .fetch_all(&mut *tx)
                .await?;
                let mut sums: BTreeMap<(String, String), (Agg, i64)> = BTreeMap::new();
                for r in &rows {
                    let minute: i64 = r.try_get("minute")?;
                    let e = sums
                        .entry((r.try_get("instance")?, r.try_get("route")?))
                        .or_insert_with(|| (Agg::default(), minute));
                    e.0.merge(&agg_from(r)?);
                    e.1 = e.1.max(minute);
                }
                for ((instance, route), (agg, last)) in &sums {
                    upsert_hourly(&mut tx, hour, instance, route, agg, *last).await?;
                }
                ((hour + HOUR_MS).min(upto), sums.len() as u64)
            }
        };
        set_watermark(&mut tx, ROLLUP_TIER, end).await?;
        tx.commit().await?;
        Ok(Some(written))
    }

    /// Compacts up to an hour of health buckets below `upto`
    /// (bucket-aligned), from the first raw sample at or past the
    /// watermark; None when the tier is complete up to `upto`.
    async fn compact_health_step(&self, upto: i64) -> Result<Option<u64>, sqlx::Error> {
        if self.tier_watermarks().await?.health >= upto {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        lock_tiers(self.backend(), &mut tx, true).await?;
        let until = watermarks_in(&mut tx).await?.health;
        if until >= upto {
            return Ok(None);
        }
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(at) FROM health_samples WHERE at >= $1 AND at < $2")
                .bind(until)
                .bind(upto)
                .fetch_one(&mut *tx)
                .await?;
        let (end, written) = match next {
            None => (upto, 0),
            Some(first) => {
                let start = health_bucket_of(first);
                let end = (start + HEALTH_BUCKETS_PER_STEP * HEALTH_BUCKET_MS).min(upto);
                // Counts per status in SQL; the statuses are the three the
                // sampler stores (anything else counts as unhealthy, as
                // HealthBucket::add does).
                let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO health_rollups (component, bucket, instance, samples, healthy, \
                     degraded, unhealthy, response_sum, response_max) \
                     SELECT component, at - (at % {HEALTH_BUCKET_MS}) AS b, instance, COUNT(*), \
                     CAST(SUM(CASE WHEN status = 'healthy' THEN 1 ELSE 0 END) AS BIGINT), \
                     CAST(SUM(CASE WHEN status = 'degraded' THEN 1 ELSE 0 END) AS BIGINT), \
                     CAST(SUM(CASE WHEN status IN ('healthy', 'degraded') THEN 0 ELSE 1 END) AS BIGINT), \
                     CAST(SUM(response_time_ms) AS BIGINT), MAX(response_time_ms) \
                     FROM health_samples WHERE at >= $1 AND at < $2 \
                     GROUP BY component, at - (at % {HEALTH_BUCKET_MS}), instance \
                     ON CONFLICT (component, bucket, instance) DO UPDATE SET \
                     samples = excluded.samples, healthy = excluded.healthy, \
                     degraded = excluded.degraded, unhealthy = excluded.unhealthy, \
                     response_sum = excluded.response_sum, response_max = excluded.response_max"
                )))
                .bind(start)
                .bind(end)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                (end, n)
            }
        };
        set_watermark(&mut tx, HEALTH_TIER, end).await?;
        tx.commit().await?;
        Ok(Some(written))
    }

    /// Route rollups of every instance from `from` on, per (minute, route)
    /// and, with `hourly`, per (hour, route) below the rollup watermark (a
    /// range reaching below it then starts at its hour). Sorted by time,
    /// then route.
    pub(crate) async fn tiered_rollups_since(
        &self,
        from: i64,
        hourly: bool,
    ) -> Result<Vec<RollupRow>, sqlx::Error> {
        let until = self.hourly_until(hourly).await?;
        let mut merged: BTreeMap<(i64, String), Agg> = BTreeMap::new();
        if from < until {
            let rows = sqlx::query(
                "SELECT hour, route, requests, errors, buckets FROM metric_rollups_hourly \
                 WHERE hour >= $1 AND hour < $2",
            )
            .bind(hour_of(from))
            .bind(until)
            .fetch_all(self.pool())
            .await?;
            for r in &rows {
                merged
                    .entry((r.try_get("hour")?, r.try_get("route")?))
                    .or_default()
                    .merge(&agg_from(r)?);
            }
        }
        let rows = sqlx::query(
            "SELECT minute, route, requests, errors, buckets FROM metric_rollups WHERE minute >= $1",
        )
        .bind(from.max(until))
        .fetch_all(self.pool())
        .await?;
        for r in &rows {
            merged
                .entry((r.try_get("minute")?, r.try_get("route")?))
                .or_default()
                .merge(&agg_from(r)?);
        }
        Ok(merged
            .into_iter()
            .map(|((minute, route), agg)| RollupRow { minute, route, agg })
            .collect())
    }

    /// Requests, errors and the latest minute per instance from `from` on,
    /// read like [`tiered_rollups_since`](Self::tiered_rollups_since).
    pub async fn instance_totals_since(
        &self,
        from: i64,
        hourly: bool,
    ) -> Result<Vec<super::monitoring::InstanceTotals>, sqlx::Error> {
        let until = self.hourly_until(hourly).await?;
        let mut totals: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
        let mut add = |rows: Vec<sqlx::any::AnyRow>| -> Result<(), sqlx::Error> {
            for r in rows {
                let e = totals
                    .entry(r.try_get("instance")?)
                    .or_insert((0, 0, i64::MIN));
                e.0 += r.try_get::<i64, _>("requests")?;
                e.1 += r.try_get::<i64, _>("errors")?;
                e.2 = e.2.max(r.try_get("last_minute")?);
            }
            Ok(())
        };
        if from < until {
            add(sqlx::query(
                "SELECT instance, CAST(SUM(requests) AS BIGINT) AS requests, \
                 CAST(SUM(errors) AS BIGINT) AS errors, MAX(last_minute) AS last_minute \
                 FROM metric_rollups_hourly WHERE hour >= $1 AND hour < $2 GROUP BY instance",
            )
            .bind(hour_of(from))
            .bind(until)
            .fetch_all(self.pool())
            .await?)?;
        }
        add(sqlx::query(
            "SELECT instance, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(errors) AS BIGINT) AS errors, MAX(minute) AS last_minute \
             FROM metric_rollups WHERE minute >= $1 GROUP BY instance",
        )
        .bind(from.max(until))
        .fetch_all(self.pool())
        .await?)?;
        Ok(totals
            .into_iter()
            .map(
                |(instance, (requests, errors, last_minute))| super::monitoring::InstanceTotals {
                    instance,
                    requests,
                    errors,
                    last_minute,
                },
            )
            .collect())
    }

    /// Raw health samples from `from` on, of one component (through the
    /// (component, at) index) or of all, oldest first.
    pub(crate) async fn health_samples_of(
        &self,
        from: i64,
        component: Option<&str>,
    ) -> Result<Vec<SampleRow>, sqlx::Error> {
        let rows =
            match component {
                Some(c) => sqlx::query(
                    "SELECT at, instance, component, status, response_time_ms FROM health_samples \
                     WHERE component = $1 AND at >= $2 ORDER BY at",
                )
                .bind(c)
                .bind(from)
                .fetch_all(self.pool())
                .await?,
                None => sqlx::query(
                    "SELECT at, instance, component, status, response_time_ms FROM health_samples \
                     WHERE at >= $1 ORDER BY at",
                )
                .bind(from)
                .fetch_all(self.pool())
                .await?,
            };
        rows.iter().map(sample_from).collect()
    }

    /// Aggregated health rows from the bucket of `from` up to the health
    /// watermark, summed per `width` (a multiple of [`HEALTH_BUCKET_MS`]) in
    /// the database, so a long range reads one row per point; and the
    /// watermark (raw samples from there on complete them).
    pub(crate) async fn health_buckets_since(
        &self,
        from: i64,
        component: Option<&str>,
        width: i64,
    ) -> Result<(Vec<HealthBucket>, i64), sqlx::Error> {
        let until = self.tier_watermarks().await?.health;
        if from >= until {
            return Ok((Vec::new(), until));
        }
        let width = width.max(HEALTH_BUCKET_MS);
        let columns = format!(
            "bucket - (bucket % {width}) AS bucket, instance, component, \
             CAST(SUM(samples) AS BIGINT) AS samples, CAST(SUM(healthy) AS BIGINT) AS healthy, \
             CAST(SUM(degraded) AS BIGINT) AS degraded, CAST(SUM(unhealthy) AS BIGINT) AS unhealthy, \
             CAST(SUM(response_sum) AS BIGINT) AS response_sum, MAX(response_max) AS response_max"
        );
        let group = format!("GROUP BY bucket - (bucket % {width}), instance, component");
        let rows = match component {
            Some(c) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM health_rollups \
                     WHERE component = $1 AND bucket >= $2 AND bucket < $3 {group}"
                )))
                .bind(c)
                .bind(health_bucket_of(from))
                .bind(until)
                .fetch_all(self.pool())
                .await?
            }
            None => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {columns} FROM health_rollups WHERE bucket >= $1 AND bucket < $2 {group}"
            )))
            .bind(health_bucket_of(from))
            .bind(until)
            .fetch_all(self.pool())
            .await?,
        };
        Ok((
            rows.iter().map(bucket_from).collect::<Result<_, _>>()?,
            until,
        ))
    }

    /// The query plan SQLite chooses for the one-component trend read
    /// (`EXPLAIN QUERY PLAN`), one line per step: how a test sees that the
    /// component filter is answered from an index.
    pub async fn sqlite_trend_plan(&self, raw: bool) -> Result<Vec<String>, sqlx::Error> {
        let q = if raw {
            sqlx::query(
                "EXPLAIN QUERY PLAN SELECT at, instance, component, status, response_time_ms \
                 FROM health_samples WHERE component = $1 AND at >= $2 ORDER BY at",
            )
            .bind("database")
            .bind(0i64)
        } else {
            sqlx::query(
                "EXPLAIN QUERY PLAN SELECT bucket - (bucket % 1800000), instance, component, \
                 SUM(samples) FROM health_rollups WHERE component = $1 AND bucket >= $2 \
                 AND bucket < $3 GROUP BY bucket - (bucket % 1800000), instance, component",
            )
            .bind("database")
            .bind(0i64)
            .bind(1i64)
        };
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail"))
            .collect()
    }
}

async fn set_watermark(
    tx: &mut sqlx::AnyConnection,
    name: &str,
    until: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE monitoring_tiers SET until = $1 WHERE name = $2")
        .bind(until)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
