//! The TikTok connection over real HTTP against the standalone sandbox: the
//! full flow and every failure path of its callback. The helpers that drive
//! the flow (start, decide, finish) are shared with the other `tiktok_*`
//! modules.

use std::time::Duration;

use huntaze::tiktok_sandbox::{Endpoint, Fault};
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

pub(crate) async fn connect(app: &TestApp, client: &reqwest::Client) -> String {
    let authorize = start(app, client).await;
    let callback = decide(&authorize, "allow").await;
    finish(client, &callback).await
}

pub(crate) fn sandbox(app: &TestApp) -> &huntaze::tiktok_sandbox::Sandbox {
    app.sandbox.as_ref().expect("sandbox")
}

pub(crate) async fn tiktok_status(app: &TestApp) -> Value {
    app.get("/api/platforms/tiktok").await.json().await.unwrap()
}

pub(crate) async fn connections(app: &TestApp) -> i64 {
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
