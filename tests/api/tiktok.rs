//! The TikTok connection over real HTTP against the standalone sandbox: the
//! full flow, every failure path of the callback, TikTok failing in each way,
//! the circuit breaker, refresh rotation, disconnect, and tokens at rest.

use std::time::Duration;

use huntaze::tiktok::sandbox::{ChallengeEncoding, Endpoint, Fault, SandboxSettings};
use serde_json::Value;

use crate::support::{TestApp, new_client};

/// The hidden fields of the sandbox's authorize form.
fn form_fields(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in html.split("<input").skip(1) {
        let attr = |name: &str| {
            part.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(|s| {
                    s.replace("&#38;", "&")
                        .replace("&amp;", "&")
                        .replace("&#34;", "\"")
                        .replace("&#39;", "'")
                })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

pub(crate) fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Starts a flow as `client`: returns TikTok's authorize URL.
pub(crate) async fn start(app: &TestApp, client: &reqwest::Client) -> String {
    let res = client
        .get(app.url("/api/auth/tiktok"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    location(&res)
}

/// Presses Allow or Deny on the sandbox's page: returns our callback URL.
pub(crate) async fn decide(authorize_url: &str, decision: &str) -> String {
    let http = new_client();
    let page = http.get(authorize_url).send().await.unwrap();
    assert_eq!(page.status(), 200, "authorize page for {authorize_url}");
    let html = page.text().await.unwrap();
    let mut fields = form_fields(&html);
    fields.push(("decision".into(), decision.into()));
    let action = authorize_url
        .split("/v2/auth/authorize/")
        .next()
        .unwrap()
        .to_owned()
        + "/v2/auth/authorize/decision";
    let res = http.post(action).form(&fields).send().await.unwrap();
    assert_eq!(res.status(), 303);
    location(&res)
}

/// Follows our callback as `client`: returns where it sends the browser.
pub(crate) async fn finish(client: &reqwest::Client, callback_url: &str) -> String {
    let res = client.get(callback_url).send().await.unwrap();
    assert_eq!(res.status(), 302, "the callback always redirects");
    location(&res)
}

async fn connect(app: &TestApp, client: &reqwest::Client) -> String {
    let authorize = start(app, client).await;
    let callback = decide(&authorize, "allow").await;
    finish(client, &callback).await
}

fn sandbox(app: &TestApp) -> &huntaze::tiktok::sandbox::Sandbox {
    app.sandbox.as_ref().expect("sandbox")
}

async fn tiktok_status(app: &TestApp) -> Value {
    app.get("/api/platforms/tiktok").await.json().await.unwrap()
}

async fn connections(app: &TestApp) -> i64 {
    app.count("SELECT COUNT(*) FROM platform_connections").await
}

crate::both_backends! {
async fn the_full_flow_connects_refreshes_and_disconnects(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .tiktok_sandbox()
        .config(|c| c.tiktok.refresh_ahead_ms = 3 * 3_600_000)
        .spawn()
        .await;
    let csrf = app.sign_up("creator@example.com").await;
    assert_eq!(tiktok_status(&app).await["connected"], false);

    let authorize = start(&app, &app.client).await;
    assert!(authorize.starts_with(&app.sandbox_base), "{authorize}");
    let q: std::collections::HashMap<String, String> = url::Url::parse(&authorize).unwrap().query_pairs().into_owned().collect();
    assert_eq!(q["client_key"], "sandbox-client-key");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["state"].len(), 43, "256-bit state");
    assert_eq!(q["redirect_uri"], app.url("/api/auth/tiktok/callback"), "from configuration (the public URL)");
    let stored: String = sqlx::query_scalar("SELECT state_hash FROM oauth_states").fetch_one(app.state.db.pool()).await.unwrap();
    assert_ne!(stored, q["state"], "only the state's hash is stored");

    let callback = decide(&authorize, "allow").await;
    let landed = finish(&app.client, &callback).await;
    assert_eq!(landed, "/platforms/connect/tiktok?status=connected");

    let s = tiktok_status(&app).await;
    assert_eq!(s["connected"], true, "{s}");
    assert_eq!(s["displayName"], "Sandbox Creator");
    assert!(s["openId"].as_str().unwrap().starts_with("sbx_"));
    assert_eq!(s["scopes"], serde_json::json!(["user.info.basic", "user.info.profile"]));
    assert!(s["expiresAt"].is_string());
    assert!(s.get("accessToken").is_none() && !s.to_string().contains("act."), "tokens never leave");

    let page = app.get(&landed).await.text().await.unwrap();
    assert!(page.contains("Connected as <strong>Sandbox Creator</strong>"));
    assert!(page.contains("Your TikTok account is connected."));
    let avatar = app.get("/platforms/connect/tiktok/avatar").await;
    assert_eq!(avatar.status(), 200);
    assert_eq!(avatar.headers()["content-type"], "image/png");

    // refresh: the refresh token rotates and the new one is kept
    let before: String = sqlx::query_scalar("SELECT refresh_token_enc FROM platform_connections").fetch_one(app.state.db.pool()).await.unwrap();
    let old_refresh = sandbox(&app).live_refresh_tokens();
    assert_eq!(old_refresh.len(), 1);
    let round = app.state.tiktok.refresh_due().await.unwrap();
    assert_eq!(round.refreshed, 1, "{round:?}");
    let after: String = sqlx::query_scalar("SELECT refresh_token_enc FROM platform_connections").fetch_one(app.state.db.pool()).await.unwrap();
    assert_ne!(before, after);
    assert!(!sandbox(&app).refresh_token_is_live(&old_refresh[0]), "rotated at TikTok");
    assert_eq!(sandbox(&app).live_refresh_tokens().len(), 1);
    assert_eq!(tiktok_status(&app).await["connected"], true);

    // disconnect: revoked at TikTok and deleted here
    let res = app.client.delete(app.url("/api/platforms/tiktok")).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert!(sandbox(&app).live_access_tokens().is_empty(), "revoked at TikTok");
    assert_eq!(tiktok_status(&app).await["connected"], false);
    assert_eq!(connections(&app).await, 0);
    let events: Vec<String> = sqlx::query_scalar("SELECT event FROM audit_events WHERE event LIKE 'tiktok_%' ORDER BY id")
        .fetch_all(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(events, vec!["tiktok_connect", "tiktok_disconnect"]);
}

async fn replayed_expired_and_foreign_states_are_refused_before_any_exchange(backend) {
    let app = TestApp::builder().backend(backend).tiktok_sandbox().spawn().await;
    app.sign_up("a@example.com").await;
    let callback = decide(&start(&app, &app.client).await, "allow").await;
    assert_eq!(finish(&app.client, &callback).await, "/platforms/connect/tiktok?status=connected");
    let exchanges = sandbox(&app).calls(Endpoint::Token);
    assert_eq!(finish(&app.client, &callback).await, "/platforms/connect/tiktok?error=INVALID_STATE", "replay");
    assert_eq!(sandbox(&app).calls(Endpoint::Token), exchanges, "no exchange for a replayed state");

    // user B finishing user A's flow
    let b = new_client();
    app.register_with(&b, "b@example.com", crate::support::PASSWORD).await;
    let a_callback = decide(&start(&app, &app.client).await, "allow").await;
    assert_eq!(finish(&b, &a_callback).await, "/platforms/connect/tiktok?error=INVALID_STATE");
    assert_eq!(finish(&app.client, &a_callback).await, "/platforms/connect/tiktok?error=INVALID_STATE", "and it is spent");
    assert_eq!(sandbox(&app).calls(Endpoint::Token), exchanges);
    let b_status: Value = b.get(app.url("/api/platforms/tiktok")).send().await.unwrap().json().await.unwrap();
    assert_eq!(b_status["connected"], false);
}
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let app = TestApp::builder()
        .tiktok_sandbox()
        .config(|c| c.tiktok.oauth_state_ttl_ms = 200)
        .spawn()
        .await;
    app.sign_up("late@example.com").await;
    let callback = decide(&start(&app, &app.client).await, "allow").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        finish(&app.client, &callback).await,
        "/platforms/connect/tiktok?error=INVALID_STATE"
    );
    assert_eq!(sandbox(&app).calls(Endpoint::Token), 0);
    let page = app
        .get("/platforms/connect/tiktok?error=INVALID_STATE")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("expired or was already used"));
}

#[tokio::test]
async fn pressing_deny_or_a_refusal_at_authorize_ends_on_the_page_with_a_message() {
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    app.sign_up("deny@example.com").await;
    let callback = decide(&start(&app, &app.client).await, "deny").await;
    assert!(callback.contains("error=access_denied"));
    assert_eq!(
        finish(&app.client, &callback).await,
        "/platforms/connect/tiktok?error=ACCESS_DENIED"
    );
    let page = app
        .get("/platforms/connect/tiktok?error=ACCESS_DENIED")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("You cancelled the connection on TikTok."));

    sandbox(&app).inject(Endpoint::Authorize, Fault::AccessDenied, 1);
    let authorize = start(&app, &app.client).await;
    let res = new_client().get(&authorize).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        finish(&app.client, &location(&res)).await,
        "/platforms/connect/tiktok?error=ACCESS_DENIED"
    );
    assert_eq!(connections(&app).await, 0);
    assert_eq!(sandbox(&app).calls(Endpoint::Token), 0);
}

#[tokio::test]
async fn a_missing_code_and_malformed_callbacks_are_clear_outcomes() {
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    app.sign_up("odd@example.com").await;
    let authorize = start(&app, &app.client).await;
    let state = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let cb = app.url("/api/auth/tiktok/callback");
    assert_eq!(
        finish(&app.client, &format!("{cb}?state={state}")).await,
        "/platforms/connect/tiktok?error=INVALID_CALLBACK"
    );
    for query in [
        format!("code=x&state={}", "s".repeat(5000)),
        "code=x&state=%C3%A9t%C3%A9".to_owned(),
        format!("code=a&code=b&state={state}"),
        format!("code=x&state={state}&state={state}"),
        "code=%00%01&state=abc".to_owned(),
        String::new(),
    ] {
        let to = finish(&app.client, &format!("{cb}?{query}")).await;
        assert!(
            to.starts_with("/platforms/connect/tiktok?error="),
            "{query:.60} → {to}"
        );
    }
    assert_eq!(connections(&app).await, 0);
    assert_eq!(sandbox(&app).calls(Endpoint::Token), 0);

    // without a session: sign in first
    let to = finish(&new_client(), &format!("{cb}?code=x&state={state}")).await;
    assert!(to.starts_with("/login?next="), "{to}");
}

#[tokio::test]
async fn the_start_route_needs_a_session() {
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    let res = app
        .client
        .get(app.url("/api/auth/tiktok"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "UNAUTHORIZED"
    );
    let res = app
        .client
        .get(app.url("/api/auth/tiktok"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(location(&res), "/login?next=%2Fapi%2Fauth%2Ftiktok");
    assert_eq!(app.get("/api/platforms/tiktok").await.status(), 401);
    assert_eq!(
        app.client
            .delete(app.url("/api/platforms/tiktok"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

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
        Some(huntaze::circuit::CircuitState::Closed)
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
        Some(huntaze::circuit::CircuitState::Open)
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

#[tokio::test]
async fn a_lost_refresh_response_never_silently_disconnects() {
    let app = TestApp::builder()
        .tiktok_sandbox()
        .config(|c| c.tiktok.refresh_ahead_ms = 3 * 3_600_000)
        .spawn()
        .await;
    app.sign_up("lost@example.com").await;
    assert_eq!(
        connect(&app, &app.client).await,
        "/platforms/connect/tiktok?status=connected"
    );
    // TikTok rotates the refresh token but the answer never arrives
    sandbox(&app).inject(Endpoint::Token, Fault::LoseResponse, 1);
    let round = app.state.tiktok.refresh_due().await.unwrap();
    assert_eq!(round.deferred, 1, "{round:?}");
    assert_eq!(
        tiktok_status(&app).await["status"],
        "connected",
        "kept: the access token still works"
    );
    // the kept refresh token was rotated away: the creator is told to reconnect
    let round = app.state.tiktok.refresh_due().await.unwrap();
    assert_eq!(round.reconnect_needed, 1, "{round:?}");
    let s = tiktok_status(&app).await;
    assert_eq!(
        (s["connected"].as_bool(), s["status"].as_str()),
        (Some(false), Some("reconnect_needed"))
    );
    let page = app
        .get("/platforms/connect/tiktok")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Reconnect needed"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE event = 'tiktok_failure'")
            .await,
        1
    );
    // reconnecting restores it
    assert_eq!(
        connect(&app, &app.client).await,
        "/platforms/connect/tiktok?status=connected"
    );
    assert_eq!(tiktok_status(&app).await["status"], "connected");
}

#[tokio::test]
async fn a_failed_revocation_still_deletes_locally_and_answers_502() {
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    let csrf = app.sign_up("revoke@example.com").await;
    connect(&app, &app.client).await;
    sandbox(&app).inject(Endpoint::Revoke, Fault::Status { status: 500 }, 10);
    let res = app
        .client
        .delete(app.url("/api/platforms/tiktok"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "BAD_GATEWAY"
    );
    assert_eq!(connections(&app).await, 0);
    assert_eq!(
        sandbox(&app).calls(Endpoint::Revoke),
        3,
        "revocation is retried (idempotent)"
    );
    let res = app
        .client
        .delete(app.url("/api/platforms/tiktok"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "CSRF token required");
}

#[tokio::test]
async fn tokens_are_not_readable_anywhere_in_the_database_file() {
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    app.sign_up("vault@example.com").await;
    connect(&app, &app.client).await;
    let access = sandbox(&app).live_access_tokens();
    let refresh = sandbox(&app).live_refresh_tokens();
    assert_eq!((access.len(), refresh.len()), (1, 1));
    let mut bytes = Vec::new();
    for f in ["huntaze.db", "huntaze.db-wal"] {
        bytes.extend(std::fs::read(app.data_dir.path().join(f)).unwrap_or_default());
    }
    assert!(bytes.len() > 4096);
    for token in access.iter().chain(refresh.iter()) {
        let needle = token.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "a token is stored in the clear"
        );
    }
    let sealed: String = sqlx::query_scalar("SELECT access_token_enc FROM platform_connections")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert!(
        sealed.starts_with("v1."),
        "sealed with a key id: {sealed:.12}"
    );
}

#[tokio::test]
async fn the_pkce_challenge_encoding_is_a_setting_that_must_match_tiktok() {
    let hex = SandboxSettings {
        challenge_encoding: ChallengeEncoding::Hex,
        ..Default::default()
    };
    let app = TestApp::builder()
        .tiktok_sandbox_with(hex.clone())
        .config(|c| c.tiktok.pkce_encoding = "hex".into())
        .spawn()
        .await;
    app.sign_up("hex@example.com").await;
    assert_eq!(
        connect(&app, &app.client).await,
        "/platforms/connect/tiktok?status=connected"
    );

    let app = TestApp::builder().tiktok_sandbox_with(hex).spawn().await;
    app.sign_up("b64@example.com").await;
    assert_eq!(
        connect(&app, &app.client).await,
        "/platforms/connect/tiktok?error=EXCHANGE_FAILED"
    );
}

#[tokio::test]
async fn in_development_without_credentials_the_built_in_sandbox_is_used_and_labelled() {
    let app = TestApp::builder()
        .config(|c| c.monitoring.token = Some("m".to_owned().into()))
        .spawn()
        .await;
    let health: Value = app
        .client
        .get(app.url("/api/health/config"))
        .bearer_auth("m")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["details"]["tiktok"], "sandbox");
    assert!(health["message"].as_str().unwrap().contains("sandbox"));
    app.sign_up("dev@example.com").await;
    let page = app
        .get("/platforms/connect/tiktok")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("built-in TikTok sandbox"));

    // the whole flow against the nested sandbox
    let authorize = start(&app, &app.client).await;
    assert!(
        authorize.starts_with(&app.url("/tiktok-sandbox/v2/auth/authorize/")),
        "{authorize}"
    );
    let callback = decide(&authorize, "allow").await;
    assert_eq!(
        finish(&app.client, &callback).await,
        "/platforms/connect/tiktok?status=connected"
    );
    assert_eq!(tiktok_status(&app).await["displayName"], "Sandbox Creator");
    // The sandbox's own address is the API origin: its avatar is fetched
    // although it sits on loopback.
    let avatar = app.get("/platforms/connect/tiktok/avatar").await;
    assert_eq!(avatar.status(), 200);
    assert_eq!(avatar.headers()["content-type"], "image/png");
}

#[tokio::test]
async fn in_production_without_credentials_the_flow_is_unavailable_and_config_is_degraded() {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let app = TestApp::builder()
        .config(move |c| {
            c.env = huntaze::config::Environment::Production;
            let db = format!("sqlite://{}", c.data_dir.join("huntaze.db").display());
            c.database.url = Some(db.into());
            c.keys.secret_key = Some(key.clone().into());
            c.keys.encryption_key = Some(key.into());
        })
        .spawn()
        .await;
    let health: Value = app.get("/api/health").await.json().await.unwrap();
    let config = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "config")
        .unwrap()
        .clone();
    assert_eq!(config["status"], "degraded");
    app.sign_up("prod@example.com").await;
    let page = app
        .get("/platforms/connect/tiktok")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("not available on this server"));
    assert!(!page.contains("sandbox"));
    let res = app
        .client
        .get(app.url("/api/auth/tiktok"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&res),
        "/platforms/connect/tiktok?error=NOT_CONFIGURED"
    );
}

#[tokio::test]
async fn after_a_key_rotation_tokens_sealed_under_the_previous_key_still_open() {
    const SECRET: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
    const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
    let mut a = TestApp::builder()
        .tiktok_sandbox()
        .config(|c| {
            c.keys.secret_key = Some(SECRET.to_owned().into());
            c.keys.encryption_key = Some(KEY_A.to_owned().into());
        })
        .spawn()
        .await;
    for email in ["old-key@example.com", "kept-key@example.com"] {
        let client = new_client();
        a.register_with(&client, email, crate::support::PASSWORD)
            .await;
        a.client = client;
        connect(&a, &a.client).await;
    }
    a.stop().await;
    let db = format!("sqlite://{}/huntaze.db", a.data_dir.path().display());
    let sandbox_base = a.sandbox_base.clone();
    let settings = SandboxSettings::default();
    // The same database and TikTok, a new encryption key; `previous` or not.
    let spawn = |previous: Option<&'static str>| {
        let (db, sandbox_base, settings) = (db.clone(), sandbox_base.clone(), settings.clone());
        TestApp::builder()
            .config(move |c| {
                c.keys.secret_key = Some(SECRET.to_owned().into());
                c.keys.encryption_key = Some(KEY_B.to_owned().into());
                c.keys.encryption_previous_keys = previous.map(|k| k.to_owned().into());
                c.database.url = Some(db.into());
                c.tiktok.client_key = Some(settings.client_key.clone());
                c.tiktok.client_secret = Some(settings.client_secret.clone().into());
                c.tiktok.auth_url = format!("{sandbox_base}/v2/auth/authorize/");
                c.tiktok.api_url = sandbox_base;
            })
            .spawn()
    };
    let disconnect = |app: &TestApp, email: &'static str| {
        let (client, url, login) = (
            app.client.clone(),
            app.url("/api/platforms/tiktok"),
            app.url("/api/auth/login"),
        );
        async move {
            let res = client
                .post(login)
                .json(&serde_json::json!({ "email": email, "password": crate::support::PASSWORD }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let csrf = res.json::<Value>().await.unwrap()["csrfToken"]
                .as_str()
                .unwrap()
                .to_owned();
            client
                .delete(url)
                .header("x-csrf-token", csrf)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Without the old key the token cannot be opened, so it cannot be revoked.
    let mut b = spawn(None).await;
    assert_eq!(disconnect(&b, "old-key@example.com").await, 502);
    b.stop().await;
    // With it in HUNTAZE_ENCRYPTION_PREVIOUS_KEYS the token opens and TikTok
    // revokes it.
    let revokes = sandbox(&a).calls(Endpoint::Revoke);
    let c = spawn(Some(KEY_A)).await;
    assert_eq!(disconnect(&c, "kept-key@example.com").await, 204);
    assert_eq!(sandbox(&a).calls(Endpoint::Revoke), revokes + 1);
}
