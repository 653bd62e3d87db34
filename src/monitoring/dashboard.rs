//! The dashboard's queries: per-route figures and series over a range,
//! health trends, per-instance totals and the scaling forecast, over the
//! stored history of every instance and this one's unwritten share.

use std::collections::BTreeMap;

use super::Monitor;
use super::history::RollupRow;
use super::rollup::{Agg, minute_of};
use super::views::{
    CacheView, DashboardData, HealthTrend, InstanceStats, Range, RouteStats, Scaling, Series,
};
use crate::store::Db;
use crate::store::monitoring::InstanceTotals;
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

impl Monitor {
    pub async fn health_trends(
        &self,
        component: Option<&str>,
        range: Range,
    ) -> Result<Vec<HealthTrend>, sqlx::Error> {
        let samples = self.samples_since(now_ms() - range.millis()).await?;
        Ok(samples
            .into_iter()
            .filter(|s| component.is_none_or(|want| want == s.component))
            .map(|s| HealthTrend {
                component: s.component,
                timestamp: rfc3339_from_ms(s.at),
                status: s.status,
                response_time: s.response_time_ms,
                instance: s.instance,
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
    async fn instance_totals_since(&self, from: i64) -> Result<Vec<InstanceTotals>, sqlx::Error> {
        self.collect();
        let _gate = self.flush_gate.read().await;
        let mut totals = self.db.instance_totals_since(from).await?;
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
        let rollups = self.rollups_since(from).await?;
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
                .instance_totals_since(from)
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
