//! Monitoring history in tiers: per-minute rollups compacted into exact
//! per-hour rows, health samples into 10-minute rows, long ranges read from
//! them, every series downsampled to at most 500 points, and the component
//! filter answered from an index.

use std::collections::BTreeMap;

use huntaze::now_ms;
use serde_json::Value;

use crate::monitoring::{TOKEN, app_with_token};
use crate::support::{Backend, TestApp, json};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

type HourKey = (i64, String, String);

fn hour_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR)
}

async fn insert_rollup(app: &TestApp, minute: i64, instance: &str, route: &str, r: (i64, i64)) {
    // buckets: (requests - errors) fast ones, errors slow ones
    let buckets = format!("[{},0,0,0,0,0,0,0,0,0,{}]", r.0 - r.1, r.1);
    sqlx::query("INSERT INTO metric_rollups (minute, instance, route, requests, errors, buckets) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(minute)
        .bind(instance)
        .bind(route)
        .bind(r.0)
        .bind(r.1)
        .bind(buckets)
        .execute(app.state.db.pool())
        .await
        .unwrap();
}

/// History written before the tiers existed (or by a server that has not
/// compacted yet): the aggregated tiers empty, their watermarks at zero.
async fn uncompacted(app: &TestApp) {
    for sql in [
        "DELETE FROM metric_rollups_hourly",
        "DELETE FROM health_rollups",
        "UPDATE monitoring_tiers SET until = 0",
    ] {
        sqlx::query(sql).execute(app.state.db.pool()).await.unwrap();
    }
}

/// The hourly rows of the given instances, every column.
async fn hourly_rows(app: &TestApp) -> Vec<(i64, String, String, i64, i64, String, i64)> {
    use sqlx::Row;
    sqlx::query("SELECT hour, instance, route, requests, errors, buckets, last_minute FROM metric_rollups_hourly WHERE instance IN ('a', 'b') ORDER BY hour, instance, route")
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("hour"),
                r.get("instance"),
                r.get("route"),
                r.get("requests"),
                r.get("errors"),
                r.get("buckets"),
                r.get("last_minute"),
            )
        })
        .collect()
}

async fn dashboard(app: &TestApp, range: &str) -> Value {
    json(
        app.client
            .get(app.url(&format!("/api/monitoring/dashboard?range={range}")))
            .bearer_auth(TOKEN),
    )
    .await
}

fn route_requests(d: &Value, route: &str) -> Option<u64> {
    d["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .map(|r| r["requests"].as_u64().unwrap())
}

fn instance_requests(d: &Value, instance: &str) -> Option<i64> {
    d["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["instance"] == instance)
        .map(|r| r["requests"].as_i64().unwrap())
}

crate::both_backends! {
async fn compaction_sums_the_minutes_exactly_and_a_second_run_changes_nothing(backend) {
    let app = app_with_token().backend(backend).spawn().await;
    let first = hour_of(now_ms()) - 3 * HOUR;
    // Two instances, two routes, three completed hours, a row every 7 minutes.
    // (hour, instance, route) -> (requests, errors, last minute, fast ones)
    let mut want: BTreeMap<HourKey, (i64, i64, i64, i64)> = BTreeMap::new();
    for instance in ["a", "b"] {
        for route in ["GET /x", "GET /y"] {
            for i in (0..180).step_by(7) {
                let minute = first + i * MINUTE;
                let r = (i + 1 + (instance == "b") as i64, i % 3);
                insert_rollup(&app, minute, instance, route, r).await;
                let e = want.entry((hour_of(minute), instance.to_owned(), route.to_owned())).or_default();
                e.0 += r.0;
                e.1 += r.1;
                e.2 = e.2.max(minute);
                e.3 += r.0 - r.1;
            }
        }
    }
    uncompacted(&app).await;
    app.state.monitor.compact().await.unwrap();
    let rows = hourly_rows(&app).await;
    let expected: Vec<_> = want
        .into_iter()
        .map(|((hour, instance, route), (req, err, last, fast))| {
            (hour, instance, route, req, err, format!("[{fast},0,0,0,0,0,0,0,0,0,{err},0,0,0,0]"), last)
        })
        .collect();
    assert_eq!(rows.len(), 12, "3 hours x 2 instances x 2 routes");
    assert_eq!(rows, expected);
    // the sums over the tier equal the sums over the minutes
    let sums = |table: &'static str| {
        let sql = match table {
            "hourly" => "SELECT CAST(SUM(requests) AS BIGINT) FROM metric_rollups_hourly WHERE instance IN ('a', 'b')",
            _ => "SELECT CAST(SUM(requests) AS BIGINT) FROM metric_rollups WHERE instance IN ('a', 'b')",
        };
        app.count(sql)
    };
    assert_eq!(sums("hourly").await, sums("minute").await);
    let until = app.state.db.tier_watermarks().await.unwrap();
    assert!(until.rollups >= first + 3 * HOUR, "{until:?}");

    app.state.monitor.compact().await.unwrap();
    uncompacted_watermark_only(&app).await;
    app.state.monitor.compact().await.unwrap();
    assert_eq!(hourly_rows(&app).await, expected, "compacting again writes the same rows");
}

async fn a_range_across_both_tiers_counts_each_request_once_and_survives_a_restart(backend) {
    let app = app_with_token().backend(backend).spawn().await;
    let now = now_ms();
    let this_hour = hour_of(now);
    // Compacted hours, and minutes of the current hour (not compacted).
    for h in 1..=3 {
        insert_rollup(&app, this_hour - h * HOUR + 10 * MINUTE, "other", "GET /tier", (5, 1)).await;
        insert_rollup(&app, this_hour - h * HOUR + 50 * MINUTE, "other", "GET /tier", (7, 0)).await;
    }
    insert_rollup(&app, this_hour, "other", "GET /tier", (11, 2)).await;
    uncompacted(&app).await;
    app.state.monitor.compact().await.unwrap();
    assert!(app.state.db.tier_watermarks().await.unwrap().rollups >= this_hour);
    // A late delta below the watermark (an outage's backlog, flushed
    // now) lands in the minute row and in its hour's row.
    let late = this_hour - 2 * HOUR + 30 * MINUTE;
    for _ in 0..4 {
        app.state.monitor.metrics.rollups.record(late + 1, "GET /tier", 3.0, true);
    }
    // and one request this minute still in memory
    app.state.monitor.metrics.rollups.record(now, "GET /tier", 3.0, false);
    let total = 3 * (5 + 7) + 11 + 4 + 1;
    let d = dashboard(&app, "7d").await;
    assert_eq!(route_requests(&d, "GET /tier"), Some(total), "7d, unwritten share merged");
    app.state.monitor.flush().await.unwrap();
    assert_eq!(
        app.count("SELECT CAST(SUM(requests) AS BIGINT) FROM metric_rollups_hourly WHERE instance = 'other' OR route = 'GET /tier'").await,
        3 * 12 + 4,
        "the late delta is in its hour; the current hour is not compacted"
    );
    for range in ["7d", "24h", "6h"] {
        let d = dashboard(&app, range).await;
        assert_eq!(route_requests(&d, "GET /tier"), Some(total), "{range}");
        let overall_errors = d["routes"].as_array().unwrap().iter().find(|r| r["route"] == "GET /tier").unwrap()["errorRate"].as_f64().unwrap();
        assert!((overall_errors - (3.0 + 2.0 + 4.0) * 100.0 / total as f64).abs() < 1e-9, "{range}: {overall_errors}");
    }
    let d = dashboard(&app, "7d").await;
    assert_eq!(instance_requests(&d, "other"), Some((3 * 12 + 11) as i64));
    let series_sum: f64 = d["series"]["requestsPerSec"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum::<f64>() * d["stepSeconds"].as_f64().unwrap();
    assert!(series_sum >= total as f64 - 1e-6, "the series counts them all: {series_sum}");

    // the tiers are in the database: a new server on it reads them
    let again = match backend {
        Backend::Sqlite => {
            let dir = app.data_dir.path().to_path_buf();
            app_with_token().config(move |c| c.data_dir = dir).spawn().await
        }
        Backend::Postgres => {
            let url = app.pg.as_ref().unwrap().url.clone();
            app_with_token().config(move |c| c.database.url = Some(url.into())).spawn().await
        }
    };
    let d = dashboard(&again, "7d").await;
    assert_eq!(route_requests(&d, "GET /tier"), Some(total));
    drop(again);
}

async fn pruned_minutes_past_the_minute_retention_are_still_read_from_their_hours(backend) {
    let app = app_with_token()
        .backend(backend)
        .config(|c| c.monitoring.minute_retention_ms = 2 * HOUR as u64)
        .spawn()
        .await;
    let this_hour = hour_of(now_ms());
    insert_rollup(&app, this_hour - 5 * HOUR + 10 * MINUTE, "old", "GET /kept", (3, 1)).await;
    insert_rollup(&app, this_hour - HOUR + 5 * MINUTE, "old", "GET /kept", (4, 0)).await;
    uncompacted(&app).await;
    app.state.monitor.prune().await.unwrap();
    assert_eq!(
        app.count("SELECT COUNT(*) FROM metric_rollups WHERE instance = 'old'").await,
        1,
        "the minute row past the minute retention went, the recent one stays"
    );
    assert_eq!(
        app.count("SELECT CAST(SUM(requests) AS BIGINT) FROM metric_rollups_hourly WHERE instance = 'old'").await,
        7
    );
    for range in ["7d", "24h"] {
        let d = dashboard(&app, range).await;
        assert_eq!(route_requests(&d, "GET /kept"), Some(7), "{range}");
        assert_eq!(instance_requests(&d, "old"), Some(7), "{range}");
    }
}

async fn dense_history_answers_at_most_500_points_per_series_for_every_range(backend) {
    let app = app_with_token().backend(backend).spawn().await;
    let now = now_ms();
    let start = now - 7 * DAY + MINUTE;
    let every = 30_000i64;
    let samples = (7 * DAY - MINUTE) / every;
    // Two instances x two components, a sample every 30 s for 7 days, a
    // degraded one every hour; a rollup every minute.
    for instance in ["gen-a", "gen-b"] {
        for component in ["database", "auth"] {
            sqlx::query(
                "WITH RECURSIVE t(n) AS (SELECT CAST(0 AS BIGINT) UNION ALL SELECT n + 1 FROM t WHERE n < $1) \
                 INSERT INTO health_samples (at, instance, component, status, response_time_ms) \
                 SELECT $2 + n * $3, $4, $5, CASE WHEN n % 120 = 0 THEN 'degraded' ELSE 'healthy' END, 4 FROM t",
            )
            .bind(samples)
            .bind(start)
            .bind(every)
            .bind(instance)
            .bind(component)
            .execute(app.state.db.pool())
            .await
            .unwrap();
        }
        sqlx::query(
            "WITH RECURSIVE t(n) AS (SELECT CAST(0 AS BIGINT) UNION ALL SELECT n + 1 FROM t WHERE n < $1) \
             INSERT INTO metric_rollups (minute, instance, route, requests, errors, buckets) \
             SELECT $2 + n * 60000, $3, 'GET /gen', 1, 0, '[1]' FROM t",
        )
        .bind(7 * 24 * 60 - 2)
        .bind(start - start.rem_euclid(MINUTE))
        .bind(instance)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    }
    uncompacted(&app).await;
    let done = app.state.monitor.compact().await.unwrap();
    assert!(done.hourly_rows >= 2 * 167, "{done:?}");

    for (range, points) in [("7d", 336..=338), ("24h", 144..=146), ("6h", 360..=362), ("1h", 120..=121), ("15m", 30..=31)] {
        for component in ["", "&component=database"] {
            let t: Value = json(app.client.get(app.url(&format!("/api/monitoring/health-trends?range={range}{component}"))).bearer_auth(TOKEN)).await;
            let mut per_series: BTreeMap<(String, String), usize> = BTreeMap::new();
            for p in t.as_array().unwrap() {
                if component.is_empty() || p["component"] == "database" {
                    *per_series.entry((p["component"].as_str().unwrap().to_owned(), p["instance"].as_str().unwrap().to_owned())).or_default() += 1;
                } else {
                    panic!("{range}: another component in a filtered trend: {p}");
                }
            }
            let generated: Vec<_> = per_series.iter().filter(|((_, i), _)| i.starts_with("gen-")).collect();
            assert_eq!(generated.len(), if component.is_empty() { 4 } else { 2 }, "{range}{component}");
            for (series, n) in generated {
                assert!(points.contains(n), "{range}{component} {series:?}: {n} points");
            }
            assert!(per_series.values().all(|n| *n <= 500), "{range}{component}");
        }
    }
    // a 7-day point holds the worst status of its half hour
    let t: Value = json(app.client.get(app.url("/api/monitoring/health-trends?range=7d&component=auth")).bearer_auth(TOKEN)).await;
    let gen_a: Vec<&Value> = t.as_array().unwrap().iter().filter(|p| p["instance"] == "gen-a").collect();
    let degraded = gen_a.iter().filter(|p| p["status"] == "degraded").count();
    assert!((167..=169).contains(&degraded), "one degraded sample an hour: {degraded}");
    assert!(gen_a.iter().all(|p| p["responseTime"] == 4));

    let d = dashboard(&app, "7d").await;
    assert_eq!(route_requests(&d, "GET /gen"), Some(2 * (7 * 24 * 60 - 1)));
    let n = d["series"]["timestamps"].as_array().unwrap().len();
    assert!((84..=86).contains(&n), "{n}");
}
}

/// The watermarks back at zero with the tiers kept: compaction must then
/// write the same rows again, not add to them.
async fn uncompacted_watermark_only(app: &TestApp) {
    sqlx::query("UPDATE monitoring_tiers SET until = 0")
        .execute(app.state.db.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_component_filter_of_health_trends_is_answered_from_an_index() {
    let app = TestApp::spawn().await;
    let raw = app
        .state
        .db
        .sqlite_trend_plan(true)
        .await
        .unwrap()
        .join("\n");
    assert!(
        raw.contains("USING INDEX health_samples_component_at (component=? AND at>?)"),
        "{raw}"
    );
    let tier = app
        .state
        .db
        .sqlite_trend_plan(false)
        .await
        .unwrap()
        .join("\n");
    assert!(
        tier.contains("(component=? AND bucket>? AND bucket<?)") && tier.contains("USING"),
        "{tier}"
    );
    assert!(!tier.contains("SCAN"), "{tier}");
}
