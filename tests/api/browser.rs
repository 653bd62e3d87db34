//! End to end in headless Chromium (Debian's `chromium` + `chromedriver`):
//! a creator signs in, connects TikTok through the sandbox's consent page,
//! and lands on the connect page showing "Connected as …".
//!
//! Skips with a message when Chromium or chromedriver is missing, unless
//! `HUNTAZE_TEST_REQUIRE_SERVICES=1` (CI), where that is a failure.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};

use crate::support::pg::services_required;
use crate::support::{PASSWORD, TestApp, eventually};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub(crate) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fills and submits the login form at `login_url` as `email` (with the
/// suite's password).
pub(crate) async fn submit_login(
    c: &fantoccini::Client,
    login_url: &str,
    email: &str,
) -> Result<(), fantoccini::error::CmdError> {
    c.goto(login_url).await?;
    c.find(Locator::Id("email")).await?.send_keys(email).await?;
    c.find(Locator::Id("password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    c.find(Locator::Css("form button[type=submit]"))
        .await?
        .click()
        .await
}

/// Signs the test's admin (`ops@example.com`) in and waits for the
/// monitoring dashboard's first load.
pub(crate) async fn sign_in_to_dashboard(
    c: &fantoccini::Client,
    app: &TestApp,
) -> Result<(), fantoccini::error::CmdError> {
    let login = app.url("/login?next=/admin/monitoring");
    submit_login(c, &login, "ops@example.com").await?;
    c.wait()
        .for_element(Locator::Css("body[data-dashboard='loaded-1h']"))
        .await?;
    Ok(())
}

pub(crate) fn browser_available(test: &str) -> bool {
    let ok = std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !ok {
        if services_required() {
            panic!(
                "{test}: Chromium and chromedriver are required (HUNTAZE_TEST_REQUIRE_SERVICES=1): apt-get install chromium chromium-driver"
            );
        }
        eprintln!(
            "SKIPPED {test}: {CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)"
        );
    }
    ok
}

pub(crate) async fn start_browser() -> (Driver, fantoccini::Client, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(15), || async {
        reqwest::get(format!("{url}/status")).await.is_ok()
    })
    .await;
    assert!(up, "chromedriver answers");
    let profile = tempfile::tempdir().unwrap().keep();
    let caps = serde_json::json!({
        "goog:loggingPrefs": { "browser": "ALL" },
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=412,915",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let client = ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a browser session");
    (driver, client, url)
}

/// Severe entries of the browser console (errors, CSP violations).
pub(crate) async fn console_errors(driver_url: &str, c: &fantoccini::Client) -> Vec<String> {
    let Ok(Some(id)) = c.session_id().await else {
        return vec!["no session id".into()];
    };
    let res = reqwest::Client::new()
        .post(format!("{driver_url}/session/{id}/se/log"))
        .json(&serde_json::json!({ "type": "browser" }))
        .send()
        .await;
    let Ok(res) = res else {
        return vec!["log endpoint unreachable".into()];
    };
    let v: serde_json::Value = res.json().await.unwrap_or_default();
    v["value"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["level"] == "SEVERE")
                .map(|e| e["message"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Where screenshots and other artifacts of browser tests go.
pub fn artifact_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_signs_in_and_connects_tiktok_in_a_real_browser() {
    if !browser_available("browser::a_creator_signs_in_and_connects_tiktok_in_a_real_browser") {
        return;
    }
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    let (status, _) = app
        .register_with(
            &crate::support::new_client(),
            "browser@example.com",
            PASSWORD,
        )
        .await;
    assert_eq!(status, 201);
    let (_driver, c, driver_url) = start_browser().await;
    let result = async {
        submit_login(&c, &app.url("/login"), "browser@example.com").await?;
        c.wait()
            .for_url(&url::Url::parse(&app.url("/platforms")).unwrap())
            .await?;

        c.find(Locator::LinkText("Manage TikTok"))
            .await?
            .click()
            .await?;
        c.find(Locator::Id("connect")).await?.click().await?;
        // TikTok's (the sandbox's) consent page, on its own origin
        let allow = c.wait().for_element(Locator::Id("allow")).await?;
        assert!(
            c.current_url()
                .await?
                .as_str()
                .starts_with(&app.sandbox_base)
        );
        allow.click().await?;
        let connected = c.wait().for_element(Locator::Id("connected-as")).await?;
        let text = connected.text().await?;
        // The avatar comes through our own route, so the page's CSP
        // (`img-src 'self' data:`) lets it render.
        let mut avatar_width = 0;
        for _ in 0..100 {
            avatar_width = c
                .execute(
                    "const i = document.querySelector(\"img[src='/platforms/connect/tiktok/avatar']\"); \
                     return i && i.complete ? i.naturalWidth : 0;",
                    vec![],
                )
                .await?
                .as_u64()
                .unwrap_or(0);
            if avatar_width > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let png = c.screenshot().await?;
        std::fs::write(artifact_dir().join("tiktok-connected.png"), png).unwrap();
        let url = c.current_url().await?;
        Ok::<_, fantoccini::error::CmdError>((text, url, avatar_width))
    }
    .await;
    // The sandbox's consent page, like TikTok's stand-ins go, has no icon:
    // the browser's guess at /favicon.ico there is not ours.
    let errors: Vec<String> = console_errors(&driver_url, &c)
        .await
        .into_iter()
        .filter(|e| !e.contains(&format!("{}/favicon.ico", app.sandbox_base)))
        .collect();
    let _ = c.close().await;
    let (text, url, avatar_width) = result.expect("the browser flow completes");
    assert_eq!(avatar_width, 64, "the avatar rendered");
    assert!(
        errors.is_empty(),
        "console errors (CSP included): {errors:?}"
    );
    assert_eq!(text, "Connected as Sandbox Creator");
    assert_eq!(url.path(), "/platforms/connect/tiktok");
    assert_eq!(url.query(), Some("status=connected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_dashboard_loads_switches_range_and_logs_no_errors() {
    if !browser_available(
        "browser::the_monitoring_dashboard_loads_switches_range_and_logs_no_errors",
    ) {
        return;
    }
    let app = TestApp::builder()
        .config(|c| c.monitoring.flush_ms = 100)
        .spawn()
        .await;
    let admin = crate::support::new_client();
    app.register_with(&admin, "ops@example.com", PASSWORD).await;
    app.promote("ops@example.com").await;
    for _ in 0..5 {
        app.get("/").await;
        app.get("/api/health").await;
    }
    let errors_route = crate::browser_dashboard::errors_route_status(&app, &admin).await;
    let (_driver, c, driver_url) = start_browser().await;
    let result = async {
        crate::browser::sign_in_to_dashboard(&c, &app).await?;
        let rows = c.find_all(Locator::Css("#routes tbody tr")).await?.len();
        let route_text = c.find(Locator::Css("#routes tbody")).await?.text().await?;
        let canvases = c
            .find_all(Locator::Css(
                "#chart-rate canvas, #chart-latency canvas, #chart-errors canvas",
            ))
            .await?
            .len();
        let components = c
            .find_all(Locator::Css("#components .component"))
            .await?
            .len();
        let alerts = c.find(Locator::Id("alerts-active")).await?.text().await?;
        c.find(Locator::Css("#range option[value='6h']"))
            .await?
            .click()
            .await?;
        c.wait()
            .for_element(Locator::Css("body[data-dashboard='loaded-6h']"))
            .await?;
        let png = c.screenshot().await?;
        std::fs::write(artifact_dir().join("monitoring-dashboard.png"), png).unwrap();
        Ok::<_, fantoccini::error::CmdError>((rows, route_text, canvases, components, alerts))
    }
    .await;
    let errors = crate::browser_dashboard::without_missing_errors_route(
        console_errors(&driver_url, &c).await,
        &app,
        errors_route,
    );
    if result.is_err() {
        if let Ok(png) = c.screenshot().await {
            std::fs::write(artifact_dir().join("monitoring-dashboard-failure.png"), png).unwrap();
        }
        eprintln!(
            "url: {:?}; console: {errors:?}",
            c.current_url().await.ok().map(|u| u.to_string())
        );
    }
    let _ = c.close().await;
    let (rows, route_text, canvases, components, alerts) = result.expect("the dashboard loads");
    assert!(rows >= 2, "route rows: {rows}");
    assert!(route_text.contains("GET /api/health"), "{route_text}");
    assert_eq!(canvases, 3, "three charts drawn");
    assert!(components >= 4);
    assert_eq!(alerts, "None");
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
