//! How the TikTok connection is configured: the PKCE challenge encoding, the
//! built-in sandbox in development, and no flow in production without
//! credentials.

use huntaze::tiktok_sandbox::{ChallengeEncoding, SandboxSettings};
use serde_json::Value;

use crate::support::TestApp;
use crate::tiktok::{connect, decide, finish, location, start, tiktok_status};

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
            c.env = huntaze::Environment::Production;
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
