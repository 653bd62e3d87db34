//! TikTok tokens after the connection: refresh rotation when a response is
//! lost, revocation at disconnect, tokens sealed at rest, and key rotation.

use huntaze::tiktok_sandbox::{Endpoint, Fault, SandboxSettings};
use serde_json::Value;

use crate::support::{TestApp, new_client};
use crate::tiktok::{connect, connections, sandbox, tiktok_status};

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

// TikTok answers a successful revoke with `{}` or with an empty body; both
// are success, not TikTok failing (which would retry the call, count
// against the circuit breaker and answer 502).
#[tokio::test]
async fn a_revocation_answered_with_an_empty_body_is_a_success() {
    let app = TestApp::builder().tiktok_sandbox().spawn().await;
    let csrf = app.sign_up("empty-revoke@example.com").await;
    connect(&app, &app.client).await;
    sandbox(&app).inject(Endpoint::Revoke, Fault::EmptyBody, 1);
    let res = app
        .client
        .delete(app.url("/api/platforms/tiktok"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(sandbox(&app).calls(Endpoint::Revoke), 1, "not retried");
    assert!(
        sandbox(&app).live_access_tokens().is_empty(),
        "revoked at TikTok"
    );
    assert_eq!(connections(&app).await, 0);
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
