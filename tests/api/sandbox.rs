//! The built-in TikTok sandbox (development without credentials): served
//! beside the server's middleware, so its JSON errors reach the client as
//! JSON and one user's bogus callbacks cannot open the circuit for
//! everyone; its consent page sends browsers only to the configured
//! redirect URI; its fault controls exist only where a test harness asked.

use serde_json::Value;

use crate::support::{TestApp, new_client};
use crate::tiktok::{decide, finish, location, start};

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn one_users_bogus_callbacks_leave_the_circuit_closed_for_everyone() {
    let app = TestApp::builder()
        .config(|c| {
            // three failures in a row would open it
            c.tiktok.circuit_window = 10;
            c.tiktok.circuit_min_calls = 3;
            c.tiktok.circuit_failure_rate = 50;
        })
        .spawn()
        .await;
    app.sign_up("prankster@example.com").await;
    for _ in 0..3 {
        let authorize = start(&app, &app.client).await;
        let state = query_param(&authorize, "state");
        // a real state, a code TikTok never issued
        let to = finish(
            &app.client,
            &app.url(&format!(
                "/api/auth/tiktok/callback?code=bogus&state={state}"
            )),
        )
        .await;
        assert_eq!(to, "/platforms/connect/tiktok?error=EXCHANGE_FAILED");
    }
    assert_eq!(
        app.state.tiktok.circuit_state(),
        Some(huntaze::CircuitState::Closed),
        "TikTok refusing a bad code is TikTok up"
    );

    let other = new_client();
    app.register_with(&other, "bystander@example.com", crate::support::PASSWORD)
        .await;
    let callback = decide(&start(&app, &other).await, "allow").await;
    assert_eq!(
        finish(&other, &callback).await,
        "/platforms/connect/tiktok?status=connected"
    );
}

#[tokio::test]
async fn the_sandboxs_json_errors_reach_the_client_as_json() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/tiktok-sandbox/v2/oauth/token/"))
        .form(&[
            ("client_key", "sandbox-client-key"),
            ("client_secret", "sandbox-client-secret"),
            ("grant_type", "authorization_code"),
            ("code", "bogus"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");

    let res = app
        .client
        .get(app.url("/tiktok-sandbox/v2/user/info/?fields=open_id"))
        .bearer_auth("act.nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "access_token_invalid", "{body}");
}

#[tokio::test]
async fn the_consent_page_redirects_only_to_the_configured_redirect_uri() {
    let app = TestApp::spawn().await;
    app.sign_up("consent@example.com").await;
    let authorize = start(&app, &app.client).await;
    assert_eq!(
        query_param(&authorize, "redirect_uri"),
        app.url("/api/auth/tiktok/callback")
    );
    let mut evil = url::Url::parse(&authorize).unwrap();
    let pairs: Vec<(String, String)> = evil
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "redirect_uri" {
                "https://evil.example/collect".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    evil.query_pairs_mut().clear().extend_pairs(pairs);
    let browser = new_client();
    let res = browser.get(evil.as_str()).send().await.unwrap();
    assert_eq!(res.status(), 400, "refused on the page");
    assert!(location(&res).is_empty());

    // The decision form's fields come back from the browser: checked again.
    let decision = app.url("/tiktok-sandbox/v2/auth/authorize/decision");
    for choice in ["allow", "deny"] {
        let res = browser
            .post(&decision)
            .form(&[
                ("decision", choice),
                ("client_key", "sandbox-client-key"),
                ("scope", "user.info.basic"),
                ("redirect_uri", "https://evil.example/collect"),
                ("state", "s"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{choice}");
        assert!(location(&res).is_empty(), "{choice}: {}", location(&res));
    }

    // the configured one still works
    let callback = decide(&authorize, "allow").await;
    assert!(
        callback.starts_with(&app.url("/api/auth/tiktok/callback?")),
        "{callback}"
    );
}

#[tokio::test]
async fn fault_controls_exist_only_where_a_test_harness_asked_for_them() {
    let inject = serde_json::json!({
        "endpoint": "token", "fault": { "kind": "status", "status": 503 }, "times": 1
    });
    // the development server's embedded sandbox: none
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/tiktok-sandbox/sandbox/faults"))
        .json(&inject)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .delete(app.url("/tiktok-sandbox/sandbox/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // a standalone sandbox with default settings (`huntaze tiktok-sandbox`
    // without --fault-controls): none either
    let plain = huntaze::tiktok_sandbox::Sandbox::new(Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(huntaze::tiktok_sandbox::serve(
        listener,
        plain,
        std::future::pending(),
    ));
    let res = new_client()
        .post(format!("{base}/sandbox/faults"))
        .json(&inject)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // the test harness's sandbox: served, and they work
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    let res = new_client()
        .post(format!("{}/sandbox/faults", app.sandbox_base))
        .json(&inject)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    app.sign_up("faulty@example.com").await;
    let callback = decide(&start(&app, &app.client).await, "allow").await;
    assert_eq!(
        finish(&app.client, &callback).await,
        "/platforms/connect/tiktok?error=TIKTOK_UNAVAILABLE"
    );
}

/// The sandbox is outside the pipeline, but not outside the request
/// deadline: a client trickling a body to it is cut off like anywhere else.
#[tokio::test]
async fn a_trickled_body_to_the_sandbox_meets_the_request_deadline() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::builder()
        .config(|c| c.server.request_timeout_ms = 1_000)
        .spawn()
        .await;
    let addr = app
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        b"POST /tiktok-sandbox/v2/oauth/token/ HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nc",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tcp.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), trickle).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the sandbox kept a trickling client past the request deadline"
    );
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
}
