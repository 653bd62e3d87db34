//! Monitoring's metrics: exact values for a known sequence, `/metrics`
//! access and format, and route labels that match axum's routing. The
//! scrape helpers are shared with `monitoring_dashboard` and
//! `monitoring_alerts`.

use std::sync::Arc;

use serde_json::Value;

use crate::support::TestApp;

pub(crate) const TOKEN: &str = "monitoring-token";

pub(crate) async fn metrics_text(app: &TestApp) -> String {
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

pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

pub(crate) fn app_with_token() -> crate::support::TestAppBuilder {
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
    let routes = huntaze::router(None);
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
        if template.starts_with(huntaze::tiktok_sandbox::SANDBOX_PREFIX) {
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
