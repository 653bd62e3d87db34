//! The monitoring dashboard in headless Chromium at a desktop (1280 px) and
//! a phone (412 px) width: every chart and sparkline inside its card, no
//! sideways scrolling, no console error, health per instance, the error
//! groups card, and the site icon. Geometry is measured in the page
//! (`getBoundingClientRect`), so a chart that spills fails the test however
//! it looks. Full-page screenshots go to `target/test-artifacts/`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use fantoccini::{Client, Locator};
use huntaze::{CheckOutcome, HealthCheck, HealthStatus};
use serde_json::{Value, json};

use crate::browser::{artifact_dir, browser_available, console_errors, start_browser};
use crate::support::{PASSWORD, TestApp, eventually, new_client};

/// The widths the dashboard must hold its shape at, with their heights.
const VIEWPORTS: [(u32, u32); 2] = [(1280, 900), (412, 915)];

/// A component whose check always answers `status`.
struct Fixed(&'static str, HealthStatus);

#[async_trait::async_trait]
impl HealthCheck for Fixed {
    fn name(&self) -> &'static str {
        self.0
    }
    fn critical(&self) -> bool {
        false
    }
    async fn check(&self) -> CheckOutcome {
        CheckOutcome {
            status: self.1,
            message: Some(format!("stand-in {}", self.1.as_str())),
            details: None,
        }
    }
}

/// A Chrome DevTools command through chromedriver (viewport sizes below
/// Chrome's minimum window width, full-page screenshots, scripts that run
/// before the page's own).
async fn cdp(driver_url: &str, c: &Client, cmd: &str, params: Value) -> Value {
    let id = c.session_id().await.ok().flatten().expect("a session id");
    let res = reqwest::Client::new()
        .post(format!("{driver_url}/session/{id}/goog/cdp/execute"))
        .json(&json!({ "cmd": cmd, "params": params }))
        .send()
        .await
        .expect("chromedriver answers");
    let v: Value = res.json().await.expect("a JSON answer");
    assert!(v["value"].get("error").is_none(), "{cmd}: {v}");
    v["value"].clone()
}

async fn set_viewport(driver_url: &str, c: &Client, (width, height): (u32, u32)) {
    cdp(
        driver_url,
        c,
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 }),
    )
    .await;
}

async fn full_page_screenshot(driver_url: &str, c: &Client, name: &str) {
    let shot = cdp(
        driver_url,
        c,
        "Page.captureScreenshot",
        json!({ "format": "png", "captureBeyondViewport": true }),
    )
    .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("PNG data"))
        .expect("base64");
    std::fs::write(artifact_dir().join(name), png).expect("screenshot written");
}

/// Where every chart, sparkline and table of the page lies, measured after
/// two frames (uPlot follows its card's width on a resize observation).
const GEOMETRY: &str = r##"
const done = arguments[arguments.length - 1];
requestAnimationFrame(() => requestAnimationFrame(() => {
  const vw = window.innerWidth;
  const problems = [];
  const rect = e => e.getBoundingClientRect();
  const name = e => e.tagName.toLowerCase() + " in #" + (e.closest("[id]") || {}).id;
  let graphics = 0;
  for (const g of document.querySelectorAll("main svg, main canvas, main .uplot")) {
    graphics++;
    const card = g.closest(".card");
    if (!card) { problems.push(name(g) + " is not in a card"); continue; }
    const a = rect(g), b = rect(card);
    if (a.width < 40 || a.height < 10) problems.push(name(g) + " is " + a.width + "x" + a.height);
    if (a.left < b.left - 0.5 || a.right > b.right + 0.5 || a.top < b.top - 0.5 || a.bottom > b.bottom + 0.5)
      problems.push(name(g) + " [" + a.left + ".." + a.right + "] x [" + a.top + ".." + a.bottom + "] outside its card ["
        + b.left + ".." + b.right + "] x [" + b.top + ".." + b.bottom + "]");
  }
  // Every error group cell, the request id last, readable without
  // scrolling inside the card: it is what an operator copies into the logs.
  for (const c of document.querySelectorAll("#errors:not([hidden]) tbody td, #errors:not([hidden]) tbody th")) {
    const a = rect(c), b = rect(c.closest(".card"));
    if (a.left < b.left - 0.5 || a.right > b.right + 0.5)
      problems.push("a cell of #errors [" + a.left + ".." + a.right + "] outside its card [" + b.left + ".." + b.right + "]");
  }
  for (const box of document.querySelectorAll("main .card, main .table-wrap, main h1, main h2")) {
    const b = rect(box);
    if (b.left < -0.5 || b.right > vw + 0.5) problems.push(name(box) + " [" + b.left + ".." + b.right + "] outside the viewport");
  }
  done({ innerWidth: vw, scrollWidth: document.documentElement.scrollWidth, graphics, problems });
}));
"##;

/// The text of every cell of the table `arguments[0]`, row by row (header
/// row first), whatever its layout at this width.
const CELLS: &str = "return [...document.querySelector(arguments[0]).rows].map(r => [...r.cells].map(c => c.textContent.trim()));";

/// The error groups the canned answer holds: a long route, several
/// instances and a long request id, the widest a row gets.
fn canned_groups() -> Value {
    json!([
        {
            "fingerprint": "9f2c", "route": "/platforms/connect/tiktok/avatar", "method": "GET",
            "status": 503, "code": "SERVICE_UNAVAILABLE", "cause": "database_unavailable",
            "count": 1204, "firstSeen": "2026-12-07T00:10:00Z", "lastSeen": "2026-12-07T00:59:30Z",
            "lastRequestId": "01JEXAMPLE7Q0ZJ4T3S9WJ2K8D5M", "instances": ["web-1", "web-2", "web-3"]
        },
        {
            "fingerprint": "a1b2", "route": "/api/test/panic", "method": "GET",
            "status": 500, "code": "INTERNAL_ERROR", "cause": "panic",
            "count": 1, "firstSeen": "2026-12-07T00:05:00Z", "lastSeen": "2026-12-07T00:05:00Z",
            "lastRequestId": "req-1", "instances": ["web-1"]
        }
    ])
}

/// Serves the canned groups in place of `/api/monitoring/errors`, in every
/// page loaded from now on (before the page's own scripts run).
fn canned_errors_script() -> String {
    format!(
        "(() => {{ const real = window.fetch; const groups = {}; \
           window.fetch = function (url) {{ \
             if (String(url).startsWith('/api/monitoring/errors')) \
               return Promise.resolve(new Response(JSON.stringify(groups), {{ status: 200, headers: {{ 'content-type': 'application/json' }} }})); \
             return real.apply(this, arguments); }}; }})();",
        canned_groups()
    )
}

/// What `/api/monitoring/errors` answers an admin (`admin` is signed in).
pub(crate) async fn errors_route_status(app: &TestApp, admin: &reqwest::Client) -> u16 {
    admin
        .get(app.url("/api/monitoring/errors?range=1h"))
        .send()
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

/// The console's errors, less the browser's own report of the error groups
/// route's 404 when this server has no such route (the page then says the
/// groups are not available, which the tests assert).
pub(crate) fn without_missing_errors_route(
    console: Vec<String>,
    app: &TestApp,
    route_status: u16,
) -> Vec<String> {
    let url = app.url("/api/monitoring/errors");
    console
        .into_iter()
        .filter(|e| !(route_status == 404 && e.starts_with(&url) && e.contains("status of 404")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_holds_its_shape_at_desktop_and_phone_widths() {
    if !browser_available(
        "browser_dashboard::the_dashboard_holds_its_shape_at_desktop_and_phone_widths",
    ) {
        return;
    }
    // Two instances on one database; the second one's external check is
    // degraded, so the instances' health differs.
    let fast = |c: &mut huntaze::Config, name: &str| {
        c.monitoring.flush_ms = 100;
        c.health.interval_ms = 100;
        c.instance_id = Some(name.into());
    };
    let app = TestApp::builder()
        .config(move |c| fast(c, "web-1"))
        .spawn()
        .await;
    let dir = app.data_dir.path().to_path_buf();
    let other = TestApp::builder()
        .config(move |c| {
            fast(c, "web-2");
            c.data_dir = dir;
        })
        .health_check(Arc::new(Fixed("external", HealthStatus::Degraded)))
        .spawn()
        .await;
    let admin = new_client();
    app.register_with(&admin, "ops@example.com", PASSWORD).await;
    app.promote("ops@example.com").await;
    app.login_with(&admin, "ops@example.com", PASSWORD).await;
    for _ in 0..5 {
        app.get("/").await;
        app.get("/api/health").await;
        other.get("/api/health").await;
    }
    assert_eq!(app.get("/api/test/panic").await.status(), 500);
    // Earlier traffic with minutes between: the latency chart has gaps.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let now_minute = now_ms - now_ms % 60_000;
    for (ago, requests) in [(20, 10), (19, 12), (12, 3)] {
        sqlx::query(
            "INSERT INTO metric_rollups (minute, instance, route, requests, errors, buckets) \
             VALUES ($1, 'web-2', 'GET /api/health', $2, 0, '[0,0,0,0,0,0,2,8]')",
        )
        .bind(now_minute - ago * 60_000)
        .bind(requests)
        .execute(app.state.db.pool())
        .await
        .expect("history row");
    }
    let both_sampled = eventually(Duration::from_secs(15), || async {
        let t: Value = admin
            .get(app.url("/api/monitoring/health-trends?range=1h"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        let has = |i: &str| {
            t.as_array()
                .is_some_and(|a| a.iter().any(|s| s["instance"] == i))
        };
        has("web-1") && has("web-2")
    })
    .await;
    assert!(
        both_sampled,
        "both instances' health samples are in the history"
    );
    let errors_route = errors_route_status(&app, &admin).await;

    let favicon = app.raw.get(app.url("/favicon.ico")).send().await.unwrap();
    assert_eq!(favicon.status(), 200);
    assert_eq!(favicon.headers()["content-type"], "image/x-icon");
    assert_eq!(favicon.headers()["cache-control"], "public, max-age=86400");
    let icon = favicon.bytes().await.unwrap();
    assert_eq!(&icon[..6], &[0, 0, 1, 0, 3, 0], "an ICO of three images");

    let (_driver, c, driver_url) = start_browser().await;
    let result = async {
        crate::browser::sign_in_to_dashboard(&c, &app).await?;

        let mut measured = Vec::new();
        for viewport in VIEWPORTS {
            set_viewport(&driver_url, &c, viewport).await;
            c.goto(&app.url("/admin/monitoring")).await?;
            c.wait()
                .for_element(Locator::Css("body[data-dashboard='loaded-1h']"))
                .await?;
            let geometry = c.execute_async(GEOMETRY, vec![]).await?;
            full_page_screenshot(&driver_url, &c, &format!("dashboard-{}.png", viewport.0)).await;
            measured.push((viewport, geometry));
        }
        let instance_health = c.execute(CELLS, vec![json!("#instance-health")]).await?;
        let external_note = c
            .execute(
                "const h = [...document.querySelectorAll('#components .component h3')].find(h => h.textContent === 'external'); \
                 const n = h && h.parentElement.querySelector('.note'); return n ? n.textContent : null;",
                vec![],
            )
            .await?;
        let errors_state = c.find(Locator::Id("errors-state")).await?.text().await?;
        let errors_table = c.find(Locator::Css("#errors tbody")).await?.text().await?;

        // The widest error rows, at the phone width.
        cdp(
            &driver_url,
            &c,
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": canned_errors_script() }),
        )
        .await;
        c.goto(&app.url("/admin/monitoring")).await?;
        c.wait()
            .for_element(Locator::Css("body[data-dashboard='loaded-1h']"))
            .await?;
        let canned = c.execute_async(GEOMETRY, vec![]).await?;
        let mut canned_rows = Vec::new();
        for row in c.find_all(Locator::Css("#errors tbody tr")).await? {
            let mut cells = Vec::new();
            for cell in row.find_all(Locator::Css("td")).await? {
                cells.push(cell.text().await?);
            }
            canned_rows.push(cells);
        }
        let canned_state = c.find(Locator::Id("errors-state")).await?.text().await?;
        full_page_screenshot(&driver_url, &c, "dashboard-412-error-groups.png").await;
        // The longest range reads other rows and steps; same shape. Two
        // loads of it read the week's samples once and the last 15
        // minutes' at each load.
        c.execute("performance.clearResourceTimings(); return null;", vec![]).await?;
        c.find(Locator::Css("#range option[value='7d']")).await?.click().await?;
        c.wait().for_element(Locator::Css("body[data-dashboard='loaded-7d']")).await?;
        let week = c.execute_async(GEOMETRY, vec![]).await?;
        c.execute(
            "document.body.removeAttribute('data-dashboard'); \
             document.getElementById('range').dispatchEvent(new Event('change')); return null;",
            vec![],
        )
        .await?;
        c.wait().for_element(Locator::Css("body[data-dashboard='loaded-7d']")).await?;
        let trend_reads = c
            .execute(
                "return performance.getEntriesByType('resource').map(e => new URL(e.name)) \
                 .filter(u => u.pathname === '/api/monitoring/health-trends').map(u => u.search).sort();",
                vec![],
            )
            .await?;
        Ok::<_, fantoccini::error::CmdError>((
            measured,
            (instance_health, external_note),
            (errors_state, errors_table),
            (canned, canned_rows, canned_state),
            (week, trend_reads),
        ))
    }
    .await;
    let console =
        without_missing_errors_route(console_errors(&driver_url, &c).await, &app, errors_route);
    let _ = c.close().await;
    let (
        measured,
        (instance_health, external_note),
        (errors_state, errors_table),
        (canned, canned_rows, canned_state),
        (week, trend_reads),
    ) = result.expect("the dashboard loads at every width");

    for ((width, _), g) in &measured {
        assert_eq!(g["innerWidth"], *width, "the viewport is {width} px wide");
        assert!(
            g["scrollWidth"].as_u64() <= g["innerWidth"].as_u64(),
            "{width} px: the page scrolls sideways: {g}"
        );
        // 3 charts (a canvas and its box each) and 4 sparklines at least.
        assert!(g["graphics"].as_u64().unwrap_or(0) >= 10, "{width} px: {g}");
        assert_eq!(g["problems"], json!([]), "{width} px");
    }

    // Health per instance: a header row, then web-1 all healthy, web-2
    // with its degraded external check; status in words.
    let health: Vec<Vec<String>> = serde_json::from_value(instance_health).expect("rows of cells");
    let status_of = |instance: &str, component: &str| {
        let column = health[0]
            .iter()
            .position(|h| h == component)
            .expect(component);
        let row = health.iter().find(|r| r[0] == instance).expect(instance);
        row[column].clone()
    };
    assert_eq!(health.len(), 3, "a header and two instances: {health:?}");
    assert_eq!(health[0][0], "Instance");
    assert_eq!(health[0].last().map(String::as_str), Some("Last sample"));
    for component in ["auth", "database", "config"] {
        assert_eq!(status_of("web-1", component), "healthy");
        assert_eq!(status_of("web-2", component), "healthy");
    }
    assert_eq!(status_of("web-1", "external"), "healthy");
    assert_eq!(status_of("web-2", "external"), "degraded");
    assert_eq!(
        external_note,
        json!("Latest: degraded on web-2"),
        "the external card says where it is degraded"
    );

    match errors_route {
        404 => {
            assert_eq!(
                errors_state,
                "Error groups are not available from this server."
            );
            assert_eq!(errors_table, "");
        }
        200 => {
            assert!(
                errors_state.ends_with("most recently seen first."),
                "{errors_state}"
            );
            assert!(
                errors_table.contains("GET /api/test/panic"),
                "{errors_table}"
            );
        }
        other => panic!("/api/monitoring/errors answered {other}"),
    }

    assert_eq!(week["innerWidth"], 412);
    assert!(week["scrollWidth"].as_u64() <= Some(412), "7d: {week}");
    assert_eq!(week["problems"], json!([]), "7d");
    assert_eq!(
        trend_reads,
        json!(["?range=15m", "?range=15m", "?range=7d"]),
        "health trends read for two loads of the 7-day range"
    );
    assert_eq!(canned["innerWidth"], 412);
    assert!(canned["scrollWidth"].as_u64() <= Some(412), "{canned}");
    assert_eq!(canned["problems"], json!([]));
    assert_eq!(canned_state, "2 groups, most recently seen first.");
    assert_eq!(
        canned_rows[0],
        [
            "GET /platforms/connect/tiktok/avatar",
            "503 SERVICE_UNAVAILABLE",
            "database_unavailable",
            "1204",
            "2026-12-07 00:10:00Z",
            "2026-12-07 00:59:30Z",
            "web-1, web-2, web-3",
            "01JEXAMPLE7Q0ZJ4T3S9WJ2K8D5M",
        ]
    );
    assert_eq!(canned_rows[1][0], "GET /api/test/panic");
    assert_eq!(canned_rows[1][7], "req-1");
    assert!(console.is_empty(), "console errors: {console:?}");
}
