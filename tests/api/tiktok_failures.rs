//! TikTok failing in each way during the connection: the token endpoint's
//! faults, user-info failures and retries, and the circuit breaker with the
//! metrics it exports.

use std::time::Duration;

use huntaze::tiktok_sandbox::{Endpoint, Fault};
use serde_json::Value;

use crate::support::TestApp;
use crate::tiktok::{
    connect, connections, decide, finish, location, sandbox, start, tiktok_status,
};

#[tokio::test]
async fn each_way_the_token_endpoint_fails_is_a_friendly_outcome_and_never_retried() {
    let app = TestApp::builder()
        .tiktok_sandbox()
        .config(|c| {
            c.tiktok.timeout_ms = 400;
            c.tiktok.circuit_min_calls = 100; // keep the circuit out of this test
        })
        .spawn()
        .await;
    app.sign_up("faults@example.com").await;
    for (fault, expected) in [
        (Fault::Status { status: 503 }, "TIKTOK_UNAVAILABLE"),
        (Fault::Slow { ms: 2_000 }, "TIKTOK_UNAVAILABLE"),
        (Fault::Garbage, "TIKTOK_UNAVAILABLE"),
        (Fault::Huge, "TIKTOK_UNAVAILABLE"),
        (
            Fault::ErrorWith200 {
                error: "invalid_grant".into(),
            },
            "EXCHANGE_FAILED",
        ),
        (
            Fault::ErrorWith200 {
                error: "server_error".into(),
            },
            "TIKTOK_UNAVAILABLE",
        ),
    ] {
        let callback = decide(&start(&app, &app.client).await, "allow").await;
        let before = sandbox(&app).calls(Endpoint::Token);
        sandbox(&app).inject(Endpoint::Token, fault.clone(), 1);
        let to = finish(&app.client, &callback).await;
        assert_eq!(
            to,
            format!("/platforms/connect/tiktok?error={expected}"),
            "{fault:?}"
        );
        assert_eq!(
            sandbox(&app).calls(Endpoint::Token),
            before + 1,
            "{fault:?}: the single-use code is exchanged once"
        );
        assert_eq!(
            connections(&app).await,
            0,
            "{fault:?}: nothing half-written"
        );
    }
    let page = app
        .get("/platforms/connect/tiktok?error=TIKTOK_UNAVAILABLE")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("TikTok is temporarily unavailable"));
    let failures = app
        .count("SELECT COUNT(*) FROM audit_events WHERE event = 'tiktok_failure'")
        .await;
    assert_eq!(failures, 6);
}

#[tokio::test]
async fn user_info_401_still_connects_without_a_profile_and_is_not_retried() {
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    app.sign_up("noinfo@example.com").await;
    sandbox(&app).inject(Endpoint::UserInfo, Fault::InvalidToken, 1);
    assert_eq!(
        connect(&app, &app.client).await,
        "/platforms/connect/tiktok?status=connected"
    );
    let s = tiktok_status(&app).await;
    assert_eq!(s["connected"], true);
    assert!(s["displayName"].is_null());
    assert_eq!(sandbox(&app).calls(Endpoint::UserInfo), 1);

    // a transient user-info failure is retried
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    app.sign_up("retry@example.com").await;
    sandbox(&app).inject(Endpoint::UserInfo, Fault::Status { status: 500 }, 1);
    assert_eq!(
        connect(&app, &app.client).await,
        "/platforms/connect/tiktok?status=connected"
    );
    assert_eq!(tiktok_status(&app).await["displayName"], "Sandbox Creator");
    assert_eq!(sandbox(&app).calls(Endpoint::UserInfo), 2);
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_closes_again() {
    let app = TestApp::builder()
        .tiktok_sandbox()
        .config(|c| {
            c.tiktok.circuit_window = 4;
            c.tiktok.circuit_min_calls = 2;
            c.tiktok.circuit_open_ms = 600;
            c.tiktok.circuit_half_open_calls = 1;
            c.monitoring.token = Some("mon".to_owned().into());
            c.health.interval_ms = 100;
        })
        .spawn()
        .await;
    app.sign_up("circuit@example.com").await;
    for _ in 0..2 {
        let callback = decide(&start(&app, &app.client).await, "allow").await;
        sandbox(&app).inject(Endpoint::Token, Fault::Status { status: 502 }, 1);
        assert_eq!(
            finish(&app.client, &callback).await,
            "/platforms/connect/tiktok?error=TIKTOK_UNAVAILABLE"
        );
    }
    // open: the flow does not even start, and the page says why
    let res = app
        .client
        .get(app.url("/api/auth/tiktok"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&res),
        "/platforms/connect/tiktok?error=TIKTOK_UNAVAILABLE"
    );
    let page = app
        .get("/platforms/connect/tiktok")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("TikTok is temporarily unavailable"));
    let open = crate::support::eventually(Duration::from_secs(3), || async {
        let h: Value = app
            .client
            .get(app.url("/api/health/external"))
            .bearer_auth("mon")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        h["details"]["tiktok"]["circuit"] == "open" && h["status"] == "degraded"
    })
    .await;
    assert!(open, "external health shows the open circuit");

    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        connect(&app, &app.client).await,
        "/platforms/connect/tiktok?status=connected",
        "a trial call closes it"
    );
    assert_eq!(
        app.state.tiktok.circuit_state(),
        Some(huntaze::CircuitState::Closed)
    );
}

/// The lines of `name`'s series in a scrape, sorted.
fn series(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn circuit_transitions_and_retries_are_exported_in_metrics() {
    let app = TestApp::builder()
        .tiktok_sandbox()
        .config(|c| {
            // opens on two failed calls in a row, not on the one retried
            c.tiktok.circuit_window = 2;
            c.tiktok.circuit_min_calls = 2;
            c.tiktok.circuit_failure_rate = 100;
            c.tiktok.circuit_open_ms = 60_000;
            c.monitoring.token = Some("mon".to_owned().into());
        })
        .spawn()
        .await;
    app.sign_up("exported@example.com").await;
    // one retried user-info call, on a connection that succeeds
    sandbox(&app).inject(Endpoint::UserInfo, Fault::Status { status: 500 }, 1);
    assert_eq!(
        connect(&app, &app.client).await,
        "/platforms/connect/tiktok?status=connected"
    );
    // then two failed token exchanges open the circuit
    for _ in 0..2 {
        let callback = decide(&start(&app, &app.client).await, "allow").await;
        sandbox(&app).inject(Endpoint::Token, Fault::Status { status: 502 }, 1);
        finish(&app.client, &callback).await;
    }
    assert_eq!(
        app.state.tiktok.circuit_state(),
        Some(huntaze::CircuitState::Open)
    );
    let text = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("mon")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        series(&text, "circuit_breaker_transitions_total"),
        [
            r#"circuit_breaker_transitions_total{circuit="tiktok",to="closed"} 0"#,
            r#"circuit_breaker_transitions_total{circuit="tiktok",to="half_open"} 0"#,
            r#"circuit_breaker_transitions_total{circuit="tiktok",to="open"} 1"#,
        ],
        "{text}"
    );
    assert_eq!(
        series(&text, "retries_total"),
        [r#"retries_total{operation="tiktok_user_info"} 1"#],
        "{text}"
    );
    crate::monitoring::promtool_check(&text);
}
