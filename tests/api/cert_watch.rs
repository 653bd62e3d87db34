//! Watching the serving certificate: `huntaze check-config` refuses a pair
//! that cannot serve and warns of one close to expiry; the `config` health
//! component and the `huntaze_tls_certificate_expiry_timestamp_seconds`
//! gauge follow the certificate being served, reload included.
//! Certificates come from a throw-away CA made with `openssl`.

use std::process::Output;
use std::sync::Arc;

use huntaze::{CheckOutcome, HealthCheck};
use serde_json::Value;

use crate::monitoring::{TOKEN, app_with_token, metrics_text, promtool_check, sample};
use crate::support::TestApp;
use crate::support::cli::check_config;
use crate::support::tls::{self, Leaf, TestCa};

const METRIC: &str = "huntaze_tls_certificate_expiry_timestamp_seconds";

fn now() -> i64 {
    huntaze::now_ms() / 1000
}

/// `check-config` with the pair at `cert` and `key`; returns its stderr
/// after checking that it names no path and no file content, and that
/// stdout holds no human text.
fn run_check_config(
    ca: &TestCa,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (Output, String) {
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let out = check_config(
        work.path(),
        &[
            ("HUNTAZE_TLS_CERT_FILE", cert.as_str()),
            ("HUNTAZE_TLS_KEY_FILE", key.as_str()),
            // What an HTTPS deployment says (an http:// one is advised against).
            ("HUNTAZE_PUBLIC_URL", "https://localhost"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let dir = ca.dir.path().display().to_string();
    assert!(!stderr.contains(&dir), "a path was printed:\n{stderr}");
    for content in ["BEGIN", "not a certificate"] {
        assert!(
            !stderr.contains(content),
            "file content was printed:\n{stderr}"
        );
    }
    assert!(!crate::support::cli::stdout_has_human_text(&out), "{out:?}");
    (out, stderr)
}

#[test]
fn check_config_refuses_a_pair_that_cannot_serve_naming_the_setting() {
    if !tls::available("check_config_refuses_a_pair_that_cannot_serve_naming_the_setting") {
        return;
    }
    let mut ca = TestCa::new("huntaze test CA");
    let good = ca.issue(&Leaf::default());
    let other = ca.issue(&Leaf::default());
    let expired = ca.issue(&Leaf {
        days: -1,
        ..Leaf::default()
    });
    let garbage = ca.dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"not a certificate\n").unwrap();
    let missing = ca.dir.path().join("missing.pem");

    let (out, stderr) = run_check_config(&ca, &good.cert, &good.key);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("configuration OK"), "{stderr}");

    for (case, cert, key, setting, why) in [
        (
            "mismatched key",
            &good.cert,
            &other.key,
            "HUNTAZE_TLS_KEY_FILE",
            "does not belong",
        ),
        (
            "garbage certificate",
            &garbage,
            &good.key,
            "HUNTAZE_TLS_CERT_FILE",
            "no PEM certificate",
        ),
        (
            "garbage key",
            &good.cert,
            &garbage,
            "HUNTAZE_TLS_KEY_FILE",
            "no PEM private key",
        ),
        (
            "missing certificate",
            &missing,
            &good.key,
            "HUNTAZE_TLS_CERT_FILE",
            "cannot be read",
        ),
        (
            "missing key",
            &good.cert,
            &missing,
            "HUNTAZE_TLS_KEY_FILE",
            "cannot be read",
        ),
        (
            "expired",
            &expired.cert,
            &expired.key,
            "HUNTAZE_TLS_CERT_FILE",
            "expired at",
        ),
    ] {
        let (out, stderr) = run_check_config(&ca, cert, key);
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        assert!(
            stderr.contains(&format!("error: {setting}: ")) && stderr.contains(why),
            "{case}: {stderr}"
        );
    }
}

#[test]
fn check_config_warns_of_a_certificate_with_fewer_than_14_days_left() {
    if !tls::available("check_config_warns_of_a_certificate_with_fewer_than_14_days_left") {
        return;
    }
    let mut ca = TestCa::new("huntaze test CA");
    let soon = ca.issue(&Leaf {
        days: 10,
        ..Leaf::default()
    });
    let (out, stderr) = run_check_config(&ca, &soon.cert, &soon.key);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning is not fatal: {stderr}"
    );
    assert!(
        stderr.contains("warning: HUNTAZE_TLS_CERT_FILE: expires in 9 day(s)")
            || stderr.contains("warning: HUNTAZE_TLS_CERT_FILE: expires in 10 day(s)"),
        "{stderr}"
    );
    assert!(!stderr.contains("error:"), "{stderr}");

    let fine = ca.issue(&Leaf {
        days: 30,
        ..Leaf::default()
    });
    let (out, stderr) = run_check_config(&ca, &fine.cert, &fine.key);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("HUNTAZE_TLS_CERT_FILE"), "{stderr}");
}

/// The `config` component of a fresh sample, as the detailed endpoint
/// answers it.
async fn config_health(app: &TestApp) -> Value {
    app.state.health.sample_now().await;
    let res = app
        .client
        .get(app.url("/api/health/config"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    res.json().await.unwrap()
}

#[tokio::test]
async fn config_health_and_the_expiry_metric_follow_the_served_certificate_across_a_reload() {
    if !tls::available("config_health_and_the_expiry_metric_follow_the_served_certificate") {
        return;
    }
    let mut ca = TestCa::new("huntaze test CA");
    let soon = ca.issue(&Leaf {
        days: 10,
        ..Leaf::default()
    });
    let renewed = ca.issue(&Leaf::default());
    let app = app_with_token().https(&ca, &soon).spawn().await;
    let resolver = app.state.certificate.clone().expect("TLS is on");

    let body = config_health(&app).await;
    assert_eq!(body["status"], "degraded", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("the serving certificate expires in"),
        "{message}"
    );
    let cert = &body["details"]["certificate"];
    let days = cert["daysToExpiry"].as_i64().unwrap();
    assert!((9..=10).contains(&days), "{body}");
    assert!(
        cert["subject"].as_str().unwrap().contains("huntaze-test"),
        "{body}"
    );
    let not_after = resolver.current().not_after;
    let at = time::OffsetDateTime::parse(
        cert["notAfter"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(at.unix_timestamp(), not_after);
    // What was there before is still there.
    assert!(body["details"]["problems"].is_array(), "{body}");
    assert!(body["details"]["environment"].is_string(), "{body}");
    assert!(body["details"]["tiktok"].is_string(), "{body}");

    let text = metrics_text(&app).await;
    assert_eq!(sample(&text, METRIC, &[]), Some(not_after as f64), "{text}");
    assert!(text.contains(&format!("# TYPE {METRIC} gauge")), "{text}");
    promtool_check(&text);

    // The operator renews the files in place and the server reloads them
    // (SIGHUP): the next sample and the next scrape show the new pair.
    std::fs::copy(&renewed.cert, &soon.cert).unwrap();
    std::fs::copy(&renewed.key, &soon.key).unwrap();
    let reloaded = resolver.reload(now()).expect("the renewed pair loads");
    assert!(reloaded.not_after > not_after);
    let body = config_health(&app).await;
    assert_eq!(body["status"], "healthy", "{body}");
    let days = body["details"]["certificate"]["daysToExpiry"]
        .as_i64()
        .unwrap();
    assert!((89..=90).contains(&days), "{body}");
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(&text, METRIC, &[]),
        Some(reloaded.not_after as f64),
        "{text}"
    );
}

#[tokio::test]
async fn without_tls_there_is_no_certificate_in_config_health_nor_an_expiry_metric() {
    let app = app_with_token().spawn().await;
    assert!(app.state.certificate.is_none());
    let body = config_health(&app).await;
    assert_eq!(body["status"], "healthy", "{body}");
    assert!(body["details"].get("certificate").is_none(), "{body}");
    let text = metrics_text(&app).await;
    assert!(!text.contains(METRIC), "{text}");
}

/// A `config` component that is unhealthy, as an expired certificate
/// makes it.
struct ExpiredConfig;

#[async_trait::async_trait]
impl HealthCheck for ExpiredConfig {
    fn name(&self) -> &'static str {
        "config"
    }
    fn critical(&self) -> bool {
        true
    }
    async fn check(&self) -> CheckOutcome {
        CheckOutcome::unhealthy("the serving certificate expired at 2000-01-01T00:00:00.000Z")
    }
}

/// An expired certificate on every instance must not take the whole fleet
/// out of rotation: `/api/health` says 503 (config is critical) and the
/// alerts fire, but readiness only follows the database and draining.
#[tokio::test]
async fn an_unhealthy_config_answers_503_on_health_but_leaves_the_instance_ready() {
    let app = TestApp::builder()
        .health_check(Arc::new(ExpiredConfig))
        .spawn()
        .await;
    assert_eq!(app.get("/api/health").await.status(), 503);
    assert_eq!(app.get("/api/health/config").await.status(), 503);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}
