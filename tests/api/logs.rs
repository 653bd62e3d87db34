//! The log lines themselves: every line the suite writes is strict JSON
//! (checked for every test by `support::logs`; here a server in trouble
//! writes the lines known to have broken it), and client errors stay out of
//! the INFO stream.

use std::sync::Arc;

use huntaze::{CheckOutcome, HealthCheck};
use serde_json::Value;

use crate::support::{TestApp, logs};

/// A component that is always unhealthy, under a name no other test uses.
struct Failing;

#[async_trait::async_trait]
impl HealthCheck for Failing {
    fn name(&self) -> &'static str {
        "logs-failing"
    }
    fn critical(&self) -> bool {
        false
    }
    async fn check(&self) -> CheckOutcome {
        CheckOutcome::unhealthy("failing on purpose")
    }
}

fn request_id(res: &reqwest::Response) -> String {
    res.headers()["x-request-id"].to_str().unwrap().to_owned()
}

/// The lines written inside the request `id`.
fn lines_of(id: &str) -> Vec<Value> {
    logs::lines(|l| l["span"]["request_id"] == id)
}

#[tokio::test]
async fn a_server_in_trouble_writes_strict_json_lines() {
    let app = TestApp::builder()
        .health_check(Arc::new(Failing))
        .spawn()
        .await;
    // 4xx, 5xx (a caught panic) and an unhealthy component
    app.get("/api/does-not-exist").await;
    app.get("/api/test/panic").await;
    let unhealthy = crate::support::eventually(std::time::Duration::from_secs(5), || async {
        !logs::lines(|l| l["component"] == "logs-failing").is_empty()
    })
    .await;
    assert!(unhealthy, "the sampler logged the failing component");
    logs::assert_strict();
    let line = &logs::lines(|l| l["component"] == "logs-failing")[0];
    assert_eq!(line["message"], "component not healthy", "{line}");
    assert_eq!(line["reason"], "failing on purpose", "{line}");
}

#[tokio::test]
async fn client_errors_are_logged_at_debug_and_server_errors_at_error() {
    let app = TestApp::spawn().await;
    let mut rejected = Vec::new();
    let res = app.get("/api/does-not-exist").await;
    assert_eq!(res.status(), 404);
    rejected.push(request_id(&res));
    let res = app
        .client
        .post(app.url("/api/test/echo"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    rejected.push(request_id(&res));
    let res = app.get("/api/auth/session").await;
    assert_eq!(res.status(), 401);
    rejected.push(request_id(&res));
    for id in &rejected {
        let lines = lines_of(id);
        let loud: Vec<_> = lines.iter().filter(|l| l["level"] != "DEBUG").collect();
        assert!(
            loud.is_empty(),
            "a client error logged above DEBUG: {loud:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l["message"] == "request rejected" && l["status"].as_u64() >= Some(400)),
            "the rejection is still there at DEBUG: {lines:?}"
        );
    }

    let res = app.get("/api/test/panic").await;
    assert_eq!(res.status(), 500);
    let lines = lines_of(&request_id(&res));
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR" && l["message"] == "request failed"),
        "a server error is logged at ERROR: {lines:?}"
    );
}
