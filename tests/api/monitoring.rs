//! Monitoring: exact metrics for a known sequence, `/metrics` access and
//! format, rollups and trends per range (surviving a restart), the alert
//! lifecycle against a webhook receiver, access control, scaling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use huntaze::health::{CheckOutcome, HealthCheck, Status};
use serde_json::Value;

use crate::support::{PASSWORD, TestApp, eventually, json, new_client};

const TOKEN: &str = "monitoring-token";

async fn metrics_text(app: &TestApp) -> String {
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    res.text().await.unwrap()
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            return None;
        }
        let ok = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        ok.then(|| value.parse().ok()).flatten()
    })
}

fn app_with_token() -> crate::support::TestAppBuilder {
    TestApp::builder().config(|c| {
        c.monitoring.token = Some(TOKEN.to_owned().into());
        c.monitoring.flush_ms = 100;
    })
}

#[tokio::test]
async fn metric_values_are_exact_for_a_known_sequence_of_requests() {
    let app = app_with_token().spawn().await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/health/database").await.status(), 200);
    }
    for path in ["/nope/1", "/nope/2"] {
        assert_eq!(app.get(path).await.status(), 404);
    }
    assert_eq!(app.get("/api/test/panic").await.status(), 500);
    assert_eq!(
        app.client
            .post(app.url("/api/health"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );

    let m = metrics_text(&app).await;
    let count = |route: &str, method: &str, status: &str| {
        sample(
            &m,
            "http_server_request_duration_seconds_count",
            &[
                ("http_route", route),
                ("http_request_method", method),
                ("http_response_status_code", status),
            ],
        )
    };
    assert_eq!(count("/api/health/{component}", "GET", "200"), Some(3.0));
    assert_eq!(count("unmatched", "GET", "404"), Some(2.0));
    assert_eq!(count("/api/test/panic", "GET", "500"), Some(1.0));
    assert_eq!(count("/api/health", "POST", "405"), Some(1.0));
    assert!(!m.contains("/nope/"), "raw paths never become labels");
    assert!(m.contains("# TYPE http_server_request_duration_seconds histogram"));
    for name in [
        "http_server_active_requests",
        "db_client_connections_usage",
        "cache_requests_total",
        "circuit_breaker_state",
        "health_component_status",
        "alerts_firing",
        "huntaze_predicted_instances",
    ] {
        assert!(m.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    assert_eq!(
        sample(&m, "health_component_status", &[("component", "database")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "alerts_firing", &[("severity", "high")]),
        Some(0.0)
    );
}

/// hyper accepts any token as a method; were the method label taken as
/// sent, each new one would add a series (and a rollup row) for good: a
/// client could grow `/metrics` and the heap without bound.
#[tokio::test]
async fn unknown_request_methods_share_one_metric_label() {
    let app = app_with_token().spawn().await;
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let res = app
            .client
            .request(method, app.url("/api/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405);
    }
    let m = metrics_text(&app).await;
    assert!(!m.contains("BREW"), "a client-chosen method became a label");
    assert_eq!(
        sample(
            &m,
            "http_server_request_duration_seconds_count",
            &[
                ("http_route", "/api/health"),
                ("http_request_method", "_OTHER"),
                ("http_response_status_code", "405"),
            ],
        ),
        Some(20.0)
    );
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set_and_pass_promtool() {
    let app = app_with_token().spawn().await;
    app.get("/").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "UNAUTHORIZED"
    );
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let text = metrics_text(&app).await;

    promtool_check(&text);
}

/// `promtool check metrics` on an exposition: no error, no lint finding.
pub(crate) fn promtool_check(text: &str) {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        if crate::support::pg::services_required() {
            panic!(
                "promtool is required (HUNTAZE_TEST_REQUIRE_SERVICES=1): apt-get install prometheus"
            );
        }
        eprintln!("SKIPPED promtool check: /usr/bin/promtool missing (apt-get install prometheus)");
        return;
    }
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}");
    assert!(report.trim().is_empty(), "promtool lint findings: {report}");
}

#[tokio::test]
async fn without_a_token_configured_metrics_are_open() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/metrics").await.status(), 200);
}

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

/// A health check whose status the test sets.
pub(crate) struct Switch(pub(crate) Arc<AtomicU8>);

#[async_trait::async_trait]
impl HealthCheck for Switch {
    fn name(&self) -> &'static str {
        "external"
    }
    fn critical(&self) -> bool {
        false
    }
    async fn check(&self) -> CheckOutcome {
        match self.0.load(Ordering::SeqCst) {
            0 => CheckOutcome::healthy(),
            _ => CheckOutcome::unhealthy("switched off by the test"),
        }
    }
}

/// A webhook receiver: what it received (body, JSON, signature).
#[derive(Default)]
pub(crate) struct Receiver {
    pub(crate) received: std::sync::Mutex<Vec<(String, Value, Option<String>)>>,
    attempts: AtomicUsize,
    fail_first: AtomicUsize,
}

impl Receiver {
    /// Notifications received with this status for this alert key.
    pub(crate) fn count(&self, status: &str, key: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v, _)| v["status"] == status && v["alert"]["key"] == key)
            .count()
    }
}

pub(crate) async fn start_receiver(r: Arc<Receiver>) -> String {
    let router = Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let r = Arc::clone(&r);
            async move {
                let n = r.attempts.fetch_add(1, Ordering::SeqCst);
                if n < r.fail_first.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers
                    .get("x-huntaze-signature")
                    .map(|v| v.to_str().unwrap().to_owned());
                let v: Value = serde_json::from_str(&body).unwrap();
                r.received.lock().unwrap().push((body, v, sig));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_once_repeats_after_its_interval_resolves_once_and_its_webhook_retries() {
    let receiver = Arc::new(Receiver::default());
    receiver.fail_first.store(2, Ordering::SeqCst);
    let hook = start_receiver(Arc::clone(&receiver)).await;
    let switch = Arc::new(AtomicU8::new(1));
    let app = app_with_token()
        .config(move |c| {
            c.health.interval_ms = 100;
            c.monitoring.alert_eval_ms = 100;
            c.monitoring.alert_for_ms = 400;
            c.monitoring.alert_repeat_ms = 1_500;
            c.monitoring.alert_unhealthy_samples = 3;
            c.monitoring.alert_webhook_url = Some(hook);
            c.monitoring.alert_webhook_secret = Some("hook-secret".to_owned().into());
        })
        .health_check(Arc::new(Switch(Arc::clone(&switch))))
        .spawn()
        .await;
    let firing = |status: &'static str| {
        let receiver = Arc::clone(&receiver);
        move || {
            let receiver = Arc::clone(&receiver);
            async move {
                receiver
                    .received
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, v, _)| v["status"] == status)
                    .count()
            }
        }
    };
    let fired = eventually(Duration::from_secs(10), || {
        let f = firing("firing");
        async move { f().await >= 1 }
    })
    .await;
    assert!(fired, "the alert fired and reached the webhook");
    assert!(
        receiver.attempts.load(Ordering::SeqCst) >= 3,
        "the webhook was retried after failing"
    );
    let alerts: Value = json(
        app.client
            .get(app.url("/api/monitoring/alerts"))
            .bearer_auth(TOKEN),
    )
    .await;
    let active = alerts["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{alerts}");
    assert_eq!(active[0]["rule"], "component_unhealthy");
    assert_eq!(active[0]["state"], "firing");
    assert_eq!(active[0]["severity"], "medium");
    let m = metrics_text(&app).await;
    assert_eq!(
        sample(&m, "alerts_firing", &[("severity", "medium")]),
        Some(1.0)
    );
    assert!(
        sample(&m, "retries_total", &[("operation", "alert_webhook")]).is_some_and(|n| n >= 2.0),
        "the webhook's retries are counted"
    );

    // not again before the repeat interval…
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(firing("firing")().await, 1, "one notification per firing");
    // …then once more
    let repeated = eventually(Duration::from_secs(5), || {
        let f = firing("firing");
        async move { f().await >= 2 }
    })
    .await;
    assert!(repeated, "a long-firing alert repeats after the interval");

    switch.store(0, Ordering::SeqCst);
    let resolved = eventually(Duration::from_secs(5), || {
        let f = firing("resolved");
        async move { f().await >= 1 }
    })
    .await;
    assert!(resolved);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(firing("resolved")().await, 1, "resolved once");
    let alerts: Value = json(
        app.client
            .get(app.url("/api/monitoring/alerts"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert!(alerts["active"].as_array().unwrap().is_empty());
    assert_eq!(alerts["recent"][0]["state"], "resolved");

    for (body, v, sig) in receiver.received.lock().unwrap().iter() {
        let expected = huntaze::monitoring::alerts::signature(
            &"hook-secret".to_owned().into(),
            body.as_bytes(),
        );
        assert_eq!(
            sig.as_deref(),
            Some(expected.as_str()),
            "signature verifies"
        );
        assert_eq!(v["alert"]["key"], "component_unhealthy:external");
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
    let now = huntaze::time_fmt::now_ms();
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
        .config(|c| c.monitoring.retention_ms = 3_600_000)
        .spawn()
        .await;
    let old = huntaze::time_fmt::now_ms() - 2 * 3_600_000;
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
    let deleted = app.state.monitor.prune().await.unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM metric_rollups WHERE instance = 'x'")
            .await,
        0
    );
    assert!(
        app.count("SELECT COUNT(*) FROM metric_rollups").await >= 1,
        "recent rollups stay"
    );
}

/// The pipeline labels requests from its own table of route templates
/// (it runs outside the router, where axum's `MatchedPath` does not exist
/// yet). For every template in that table, a concrete path must be routed
/// by axum to the very same template.
#[tokio::test]
async fn every_route_label_is_the_template_axum_routes_the_path_to() {
    use axum::extract::{MatchedPath, Request};
    use axum::middleware::{Next, from_fn};
    use tower::ServiceExt;

    let app = TestApp::spawn().await;
    let routes = huntaze::routes::router(None);
    let templates: Vec<String> = routes.labels.templates().map(str::to_owned).collect();
    assert!(templates.len() > 20, "{templates:?}");
    let seen = Arc::new(std::sync::Mutex::new(None::<String>));
    let record = Arc::clone(&seen);
    let router = routes
        .light
        .merge(routes.full)
        .with_state(app.state.clone())
        .layer(from_fn(move |req: Request, next: Next| {
            let record = Arc::clone(&record);
            async move {
                *record.lock().unwrap() = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|m| m.as_str().to_owned());
                next.run(req).await
            }
        }));
    for template in &templates {
        if template.starts_with(huntaze::tiktok::SANDBOX_PREFIX) {
            continue; // a nested service: axum reports no MatchedPath there
        }
        let path: String = template
            .split('/')
            .map(|seg| match seg {
                s if s.starts_with("{*") => "a/b",
                s if s.starts_with('{') => "x1",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        assert_eq!(
            routes
                .labels
                .label(&path)
                .map(|id| routes.labels.template(id)),
            Some(template.as_str()),
            "label of {path}"
        );
        *seen.lock().unwrap() = None;
        let req = Request::builder()
            .uri(&path)
            .body(axum::body::Body::empty())
            .unwrap();
        let _ = router.clone().oneshot(req).await;
        assert_eq!(
            seen.lock().unwrap().as_deref(),
            Some(template.as_str()),
            "axum routes {path} to another template"
        );
    }
}
