//! Monitoring's history and pages: rollups and trends per range (surviving
//! a restart), access control, the admin page, the scaling forecast, and
//! retention.

use std::time::Duration;

use huntaze::HealthStatus as Status;
use serde_json::Value;

use crate::monitoring::{TOKEN, app_with_token, metrics_text, sample};
use crate::support::{PASSWORD, eventually, json, new_client};

crate::both_backends! {
async fn rollups_and_trends_cover_every_range_and_survive_a_restart(backend) {
    let app = app_with_token().backend(backend).config(|c| c.health.interval_ms = 100).spawn().await;
    for _ in 0..4 {
        app.get("/api/health/auth").await;
    }
    app.get("/api/test/panic").await;
    for range in ["15m", "1h", "6h", "24h", "7d"] {
        let res = app.client.get(app.url(&format!("/api/monitoring/dashboard?range={range}"))).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(res.status(), 200, "{range}");
        let d: Value = res.json().await.unwrap();
        assert_eq!(d["range"], range);
        let routes = d["routes"].as_array().unwrap();
        let health_row = routes.iter().find(|r| r["route"] == "GET /api/health/{component}").expect("route row");
        assert_eq!(health_row["requests"], 4, "{range}");
        assert_eq!(health_row["errorRate"], 0.0);
        assert!(health_row["p95"].as_f64().is_some());
        let panic_row = routes.iter().find(|r| r["route"] == "GET /api/test/panic").unwrap();
        assert_eq!(panic_row["errorRate"], 100.0);
        let series = &d["series"];
        let n = series["timestamps"].as_array().unwrap().len();
        assert!(n >= 2, "{range}: {n} points");
        assert_eq!(series["requestsPerSec"].as_array().unwrap().len(), n);
        assert!(d["health"]["components"].as_array().unwrap().len() >= 4);
        assert!(d["pool"]["max"].is_u64());
        assert!(d["scaling"]["instances15m"].is_u64());
    }
    let res = app.client.get(app.url("/api/monitoring/dashboard?range=2d")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 400);

    let has_trends = eventually(Duration::from_secs(5), || async {
        let t: Value = app.client.get(app.url("/api/monitoring/health-trends?component=database&range=15m")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        t.as_array().is_some_and(|a| a.len() >= 2 && a.iter().all(|p| p["component"] == "database" && p["status"] == "healthy"))
    })
    .await;
    assert!(has_trends, "health samples are kept");
    let res = app.client.get(app.url("/api/monitoring/health-trends?component=kitchen")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 400);

    // history is in the database: a new instance on the same database sees it
    if backend == crate::support::Backend::Sqlite {
        let dir = app.data_dir.path().to_path_buf();
        let again = app_with_token().config(move |c| c.data_dir = dir).spawn().await;
        let d: Value = again.client.get(again.url("/api/monitoring/dashboard?range=15m")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        let row = d["routes"].as_array().unwrap().iter().find(|r| r["route"] == "GET /api/health/{component}").cloned();
        assert_eq!(row.expect("the first instance's rollup")["requests"], 4);
    }
}
}

#[tokio::test]
async fn monitoring_apis_and_the_dashboard_are_for_admins_and_machines_only() {
    let app = app_with_token().spawn().await;
    for path in [
        "/api/monitoring/dashboard",
        "/api/monitoring/health-trends",
        "/api/monitoring/alerts",
        "/api/monitoring/scaling",
    ] {
        assert_eq!(app.get(path).await.status(), 401, "{path}");
    }
    let res = app.get("/admin/monitoring").await;
    assert_eq!(res.status(), 303);
    app.sign_up("creator@example.com").await;
    for path in [
        "/api/monitoring/dashboard",
        "/api/monitoring/alerts",
        "/admin/monitoring",
    ] {
        assert_eq!(app.get(path).await.status(), 403, "{path}");
    }
    let admin = new_client();
    app.register_with(&admin, "ops@example.com", PASSWORD).await;
    app.promote("ops@example.com").await;
    for path in [
        "/api/monitoring/dashboard",
        "/api/monitoring/health-trends",
        "/api/monitoring/alerts",
        "/api/monitoring/scaling",
        "/admin/monitoring",
    ] {
        assert_eq!(
            admin.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let page = admin
        .get(app.url("/admin/monitoring"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for asset in page
        .split("=\"")
        .filter_map(|s| s.split('"').next())
        .filter(|s| s.starts_with("/assets/"))
    {
        assert_eq!(
            admin.get(app.url(asset)).send().await.unwrap().status(),
            200,
            "{asset}"
        );
    }
    assert!(page.contains("/assets/uPlot.iife.min.") && page.contains("/assets/dashboard."));
    assert!(!page.contains("<script>"), "no inline script");
    let s: Value = json(
        app.client
            .get(app.url("/api/monitoring/scaling"))
            .bearer_auth(TOKEN),
    )
    .await;
    for k in [
        "currentRate",
        "forecast15m",
        "forecast60m",
        "capacityPerInstance",
        "instances15m",
        "instances60m",
    ] {
        assert!(s.get(k).is_some(), "{k}");
    }
}

#[tokio::test]
async fn the_admin_sees_the_monitoring_page_link_free_of_remote_origins() {
    let app = app_with_token().spawn().await;
    let admin = new_client();
    app.register_with(&admin, "ops2@example.com", PASSWORD)
        .await;
    app.promote("ops2@example.com").await;
    let res = admin
        .get(app.url("/admin/monitoring"))
        .send()
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"));
    let html = res.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no remote origin in the page"
    );
    let _ = Status::Healthy;
}

#[tokio::test]
async fn the_scaling_forecast_follows_a_rising_trend() {
    let app = app_with_token()
        .config(|c| c.monitoring.scaling_capacity_rps = 10.0)
        .spawn()
        .await;
    let now = huntaze::now_ms();
    let this_minute = now - now.rem_euclid(60_000);
    // 30 past minutes, rising from 60 to 30·60+60 requests a minute (1 → 31 req/s)
    for i in 0..30i64 {
        let minute = this_minute - (30 - i) * 60_000;
        let requests = 60 + i * 60;
        sqlx::query("INSERT INTO metric_rollups (minute, instance, route, requests, errors, buckets) VALUES ($1, 'other', 'GET /', $2, 0, '[]')")
            .bind(minute)
            .bind(requests)
            .execute(app.state.db.pool())
            .await
            .unwrap();
    }
    let s: Value = json(
        app.client
            .get(app.url("/api/monitoring/scaling"))
            .bearer_auth(TOKEN),
    )
    .await;
    let current = s["currentRate"].as_f64().unwrap();
    let f15 = s["forecast15m"].as_f64().unwrap();
    let f60 = s["forecast60m"].as_f64().unwrap();
    assert!((27.0..=31.0).contains(&current), "{s}");
    assert!((f15 - 46.0).abs() < 1.5, "one more req/s per minute: {s}");
    assert!(f60 > f15 && (f60 - 91.0).abs() < 1.5, "{s}");
    assert_eq!(s["instances15m"], 5);
    assert_eq!(s["instances60m"], 10);
    let m = metrics_text(&app).await;
    assert_eq!(sample(&m, "huntaze_predicted_instances", &[]), Some(5.0));
}

#[tokio::test]
async fn history_past_the_retention_is_pruned() {
    let app = app_with_token()
        .config(|c| {
            c.monitoring.retention_ms = 3_600_000;
            c.monitoring.minute_retention_ms = 1_800_000;
        })
        .spawn()
        .await;
    let old = huntaze::now_ms() - 2 * 3_600_000;
    let db = app.state.db.pool();
    sqlx::query("INSERT INTO metric_rollups (minute, instance, route, requests, errors, buckets) VALUES ($1, 'x', 'GET /', 1, 0, '[]')")
        .bind(old - old.rem_euclid(60_000))
        .execute(db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO health_samples (at, instance, component, status, response_time_ms) VALUES ($1, 'x', 'auth', 'healthy', 1)")
        .bind(old)
        .execute(db)
        .await
        .unwrap();
    app.get("/").await;
    app.state.monitor.flush().await.unwrap();
    let before_rollups = app
        .count("SELECT COUNT(*) FROM metric_rollups WHERE instance = 'x'")
        .await;
    let before_samples = app
        .count("SELECT COUNT(*) FROM health_samples WHERE instance = 'x'")
        .await;
    assert_eq!((before_rollups, before_samples), (1, 1));
    // Its rows, and whatever compaction made of them, are past the
    // retention.
    let deleted = app.state.monitor.prune().await.unwrap();
    assert!(deleted >= 2, "{deleted}");
    for sql in [
        "SELECT COUNT(*) FROM metric_rollups WHERE instance = 'x'",
        "SELECT COUNT(*) FROM health_samples WHERE instance = 'x'",
        "SELECT COUNT(*) FROM metric_rollups_hourly WHERE instance = 'x'",
        "SELECT COUNT(*) FROM health_rollups WHERE instance = 'x'",
    ] {
        assert_eq!(app.count(sql).await, 0, "{sql}");
    }
    assert!(
        app.count("SELECT COUNT(*) FROM metric_rollups").await >= 1,
        "recent rollups stay"
    );
}
