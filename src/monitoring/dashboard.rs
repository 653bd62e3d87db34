//! The dashboard's queries: per-route figures and series over a range,
//! health trends, per-instance totals and the scaling forecast, over the
//! stored history of every instance and this one's unwritten share.

use std::collections::BTreeMap;

use super::Monitor;
use super::history::{RollupRow, SampleRow};
use super::rollup::{Agg, minute_of};
use super::views::{
    CacheView, DashboardData, HealthTrend, InstanceStats, Range, RouteStats, Scaling, Series,
};
use crate::store::Db;
use crate::store::monitoring::InstanceTotals;
use crate::store::tiers::{HEALTH_BUCKET_MS, HOUR_MS, HealthBucket};
use crate::time_fmt::{now_ms, rfc3339_from_ms};

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

/// Most points a dashboard or trend series answers, whatever the range.
pub(crate) const MAX_POINTS: i64 = 500;

/// Ranges longer than this read health trends from the aggregated tier;
/// shorter ones read raw samples (kept for the minute retention).
const RAW_TRENDS_UP_TO_MS: i64 = 6 * 3_600_000;

/// Point widths a trend is downsampled to: round figures, so points of
/// several series line up.
const WIDTHS_MS: [i64; 16] = [
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_200_000,
    1_800_000, 3_600_000, 7_200_000, 21_600_000, 86_400_000,
];

/// The narrowest round width at least `floor` wide that keeps a series
/// over `span_ms` within [`MAX_POINTS`] (one more point for a partial
/// width at either end).
pub(crate) fn point_width(span_ms: i64, floor: i64) -> i64 {
    WIDTHS_MS
        .into_iter()
        .find(|w| *w >= floor && (span_ms + *w - 1) / *w < MAX_POINTS)
        .unwrap_or(WIDTHS_MS[WIDTHS_MS.len() - 1])
}

/// Downsamples health history into trend points: per (component,
/// instance), one point per `width` (its start), with the worst status in
/// it and the mean response time. A series that has at most
/// [`MAX_POINTS`] raw samples is answered sample by sample instead
/// (`raw`), so a short range shows every round. Sorted by time, then
/// instance, then component.
pub(crate) fn trend_points(
    raw: Vec<SampleRow>,
    buckets: Vec<HealthBucket>,
    width: i64,
) -> Vec<HealthTrend> {
    let mut per_series: BTreeMap<(String, String), Vec<SampleRow>> = BTreeMap::new();
    for s in raw {
        per_series
            .entry((s.component.clone(), s.instance.clone()))
            .or_default()
            .push(s);
    }
    let mut points: BTreeMap<(String, String, i64), HealthBucket> = BTreeMap::new();
    let mut out = Vec::new();
    let has_buckets: std::collections::HashSet<(String, String)> = buckets
        .iter()
        .map(|b| (b.component.clone(), b.instance.clone()))
        .collect();
    for ((component, instance), samples) in per_series {
        let aggregated = has_buckets.contains(&(component.clone(), instance.clone()));
        if !aggregated && samples.len() as i64 <= MAX_POINTS {
            out.extend(samples.into_iter().map(|s| HealthTrend {
                component: s.component,
                timestamp: rfc3339_from_ms(s.at),
                status: s.status,
                response_time: s.response_time_ms,
                instance: s.instance,
            }));
            continue;
        }
        for s in samples {
            let at = s.at - s.at.rem_euclid(width);
            let p = points
                .entry((component.clone(), instance.clone(), at))
                .or_default();
            p.add(&s);
        }
    }
    for b in buckets {
        let at = b.bucket - b.bucket.rem_euclid(width);
        points
            .entry((b.component.clone(), b.instance.clone(), at))
            .or_default()
            .merge(&b);
    }
    let mut timed: Vec<(i64, HealthTrend)> = out
        .into_iter()
        .map(|t| (0, t))
        .chain(points.into_iter().filter(|(_, p)| p.samples > 0).map(
            |((component, instance, at), p)| {
                let status = if p.unhealthy > 0 {
                    "unhealthy"
                } else if p.degraded > 0 {
                    "degraded"
                } else {
                    "healthy"
                };
                (
                    at,
                    HealthTrend {
                        component,
                        timestamp: rfc3339_from_ms(at),
                        status: status.into(),
                        response_time: (p.response_sum as f64 / p.samples as f64).round() as i64,
                        instance,
                    },
                )
            },
        ))
        .collect();
    // RFC 3339 UTC timestamps of one format sort as the times do.
    timed.sort_by(|(_, a), (_, b)| {
        (&a.timestamp, &a.instance, &a.component).cmp(&(&b.timestamp, &b.instance, &b.component))
    });
    timed.into_iter().map(|(_, t)| t).collect()
}

impl Monitor {
    /// Health trends over `range`, of one component or all: raw samples
    /// for short ranges, the 10-minute tier (completed by the raw samples
    /// past its watermark) for long ones, downsampled to at most
    /// [`MAX_POINTS`] points per component and instance.
    pub async fn health_trends(
        &self,
        component: Option<&str>,
        range: Range,
    ) -> Result<Vec<HealthTrend>, sqlx::Error> {
        let now = now_ms();
        let from = now - range.millis();
        let tiered = range.millis() > RAW_TRENDS_UP_TO_MS || from < now - self.minute_retention_ms;
        let floor = if tiered { HEALTH_BUCKET_MS } else { 1_000 };
        let width = point_width(range.millis(), floor);
        let _gate = self.flush_gate.read().await;
        let (buckets, raw_from) = if tiered {
            self.db.health_buckets_since(from, component, width).await?
        } else {
            (Vec::new(), from)
        };
        let raw_from = raw_from.max(from);
        let mut raw = self.db.health_samples_of(raw_from, component).await?;
        raw.extend(
            self.history()
                .pending_samples_since(raw_from)
                .into_iter()
                .filter(|s| component.is_none_or(|c| c == s.component)),
        );
        raw.sort_by(|a, b| {
            (a.at, &a.instance, &a.component).cmp(&(b.at, &b.instance, &b.component))
        });
        raw.dedup_by(|a, b| (a.at, &a.instance, &a.component) == (b.at, &b.instance, &b.component));
        Ok(trend_points(raw, buckets, width))
    }

    /// Whether a dashboard over `range` reads the hourly tier: when its
    /// points are whole hours, or it reaches past the minute retention.
    fn reads_hourly(&self, range: Range, from: i64, now: i64) -> bool {
        range.step_ms() % HOUR_MS == 0 || from < now - self.minute_retention_ms
    }

    /// Linear least-squares trend of the per-minute request rate over the
    /// last 30 minutes, projected 15 and 60 minutes ahead.
    pub async fn scaling(&self) -> Result<Scaling, sqlx::Error> {
        let now = now_ms();
        let from = minute_of(now) - 30 * 60_000;
        let rollups = self.rollups_since(from).await?;
        let mut per_minute: BTreeMap<i64, u64> = BTreeMap::new();
        for row in &rollups {
            *per_minute.entry(row.minute).or_default() += row.agg.requests;
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
        hourly: bool,
    ) -> Result<Vec<InstanceTotals>, sqlx::Error> {
        self.collect();
        let _gate = self.flush_gate.read().await;
        let mut totals = self.db.instance_totals_since(from, hourly).await?;
        if let Some((req, err, last)) = self.history().pending_totals_since(from) {
            match totals.iter_mut().find(|t| t.instance == self.instance) {
                Some(t) => {
                    t.requests += req;
                    t.errors += err;
                    t.last_minute = t.last_minute.max(last);
                }
                None => {
                    totals.push(InstanceTotals {
                        instance: self.instance.clone(),
                        requests: req,
                        errors: err,
                        last_minute: last,
                    });
                    totals.sort_by(|a, b| a.instance.cmp(&b.instance));
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
        cache: Option<crate::cache::CacheStats>,
    ) -> Result<DashboardData, sqlx::Error> {
        let now = now_ms();
        let from = minute_of(now - range.millis());
        let seconds = (now - from) as f64 / 1000.0;
        let hourly = self.reads_hourly(range, from, now);
        let rollups = self.tiered_rollups_since(from, hourly).await?;
        let mut per_route: BTreeMap<String, Agg> = BTreeMap::new();
        let mut overall = Agg::default();
        let step = range.step_ms();
        let mut per_step: BTreeMap<i64, Agg> = BTreeMap::new();
        for RollupRow { minute, route, agg } in &rollups {
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
                .instance_totals_since(from, hourly)
                .await?
                .into_iter()
                .map(|t| InstanceStats {
                    instance: t.instance,
                    requests: t.requests,
                    errors: t.errors,
                    last_seen: rfc3339_from_ms(t.last_minute),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, instance: &str, component: &str, status: &str, ms: i64) -> SampleRow {
        SampleRow {
            at,
            instance: instance.into(),
            component: component.into(),
            status: status.into(),
            response_time_ms: ms,
        }
    }

    fn per_series(points: &[HealthTrend]) -> BTreeMap<(String, String), usize> {
        let mut n = BTreeMap::new();
        for p in points {
            *n.entry((p.component.clone(), p.instance.clone()))
                .or_default() += 1;
        }
        n
    }

    #[test]
    fn every_range_of_dense_samples_answers_at_most_500_points_per_series() {
        let now = 1_800_000_000_000;
        for range in Range::ALL {
            let span = range.millis();
            // Ten times more samples than points allowed, per series.
            let every = (span / (10 * MAX_POINTS)).max(1);
            let tiered = span > RAW_TRENDS_UP_TO_MS;
            let width = point_width(span, if tiered { HEALTH_BUCKET_MS } else { 1_000 });
            let mut raw = Vec::new();
            let mut buckets = Vec::new();
            for instance in ["a", "b"] {
                for component in ["database", "redis"] {
                    let mut at = now - span;
                    while at <= now {
                        let s = sample(at, instance, component, "healthy", 5);
                        if tiered && at < now - 3_600_000 {
                            let b = health_bucket_of_test(at);
                            match buckets.last_mut() {
                                Some(last @ HealthBucket { .. })
                                    if last.bucket == b
                                        && last.instance == instance
                                        && last.component == component =>
                                {
                                    last.add(&s)
                                }
                                _ => {
                                    let mut nb = HealthBucket {
                                        bucket: b,
                                        instance: instance.into(),
                                        component: component.into(),
                                        ..HealthBucket::default()
                                    };
                                    nb.add(&s);
                                    buckets.push(nb);
                                }
                            }
                        } else {
                            raw.push(s);
                        }
                        at += every;
                    }
                }
            }
            let points = trend_points(raw, buckets, width);
            let counts = per_series(&points);
            assert_eq!(counts.len(), 4, "{range:?}");
            for (series, n) in counts {
                assert!(
                    (100..=MAX_POINTS as usize).contains(&n),
                    "{range:?} {series:?}: {n} points"
                );
            }
            assert!(
                points
                    .iter()
                    .all(|p| p.status == "healthy" && p.response_time == 5)
            );
        }
    }

    fn health_bucket_of_test(at: i64) -> i64 {
        crate::store::tiers::health_bucket_of(at)
    }

    #[test]
    fn a_point_shows_the_worst_status_and_the_mean_response_time() {
        let width = 60_000;
        let mut raw: Vec<SampleRow> = (0..600)
            .map(|i| sample(i * 1_000, "a", "database", "healthy", 10))
            .collect();
        raw[61].status = "degraded".into();
        raw[62].status = "unhealthy".into();
        raw[62].response_time_ms = 70;
        let points = trend_points(raw, Vec::new(), width);
        assert_eq!(points.len(), 10);
        assert_eq!(
            points.iter().map(|p| p.status.as_str()).collect::<Vec<_>>(),
            [
                "healthy",
                "unhealthy",
                "healthy",
                "healthy",
                "healthy",
                "healthy",
                "healthy",
                "healthy",
                "healthy",
                "healthy"
            ]
        );
        // (59 × 10 + 70) / 60 = 11
        assert_eq!(points[1].response_time, 11);
        assert_eq!(points[1].timestamp, rfc3339_from_ms(60_000));
        assert_eq!(points[0].response_time, 10);
    }

    #[test]
    fn a_sparse_series_is_answered_sample_by_sample() {
        let raw: Vec<SampleRow> = (0..3)
            .map(|i| sample(i * 100, "a", "redis", "degraded", i))
            .collect();
        let points = trend_points(raw, Vec::new(), 60_000);
        assert_eq!(
            points
                .iter()
                .map(|p| (p.timestamp.clone(), p.response_time))
                .collect::<Vec<_>>(),
            (0..3)
                .map(|i| (rfc3339_from_ms(i * 100), i))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_dashboard_series_has_at_most_500_points() {
        for range in Range::ALL {
            // from the step before the range's start to the one holding now
            let points = range.millis() / range.step_ms() + 2;
            assert!(points <= MAX_POINTS, "{range:?}: {points}");
        }
        assert_eq!(point_width(7 * 24 * 3_600_000, HEALTH_BUCKET_MS), 1_800_000);
        assert_eq!(point_width(15 * 60_000, 1_000), 2_000);
    }
}
