//! Who may scrape `/metrics`: anyone in development, the monitoring token's
//! holder when one is configured, and in production without a token nobody
//! (404).

use base64::Engine;

use crate::support::TestApp;

/// A production server on SQLite, with `token` as its monitoring token.
async fn production(token: Option<&'static str>) -> TestApp {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    TestApp::builder()
        .config(move |c| {
            c.env = huntaze::Environment::Production;
            let db = format!("sqlite://{}", c.data_dir.join("huntaze.db").display());
            c.database.url = Some(db.into());
            c.keys.secret_key = Some(key.clone().into());
            c.keys.encryption_key = Some(key.into());
            c.monitoring.token = token.map(|t| t.to_owned().into());
        })
        .spawn()
        .await
}

async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn in_production_without_a_monitoring_token_metrics_is_not_found() {
    let app = production(None).await;
    let (status, body) = scrape(&app, None).await;
    assert_eq!(status, 404, "{body:.200}");
    assert!(
        !body.contains("http_requests"),
        "no series leak: {body:.200}"
    );
    assert_eq!(scrape(&app, Some("guess")).await.0, 404);
}

#[tokio::test]
async fn in_production_with_a_monitoring_token_metrics_needs_it() {
    let app = production(Some("mon-token")).await;
    assert_eq!(scrape(&app, None).await.0, 401);
    assert_eq!(scrape(&app, Some("wrong")).await.0, 401);
    let (status, body) = scrape(&app, Some("mon-token")).await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE"), "{body:.200}");
}

#[tokio::test]
async fn in_development_metrics_stays_open_without_a_token() {
    let app = TestApp::spawn().await;
    let (status, body) = scrape(&app, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE"), "{body:.200}");
}

/// The scheme name of an `Authorization` header is case-insensitive
/// (RFC 9110 §11.1): `bearer`, `BEARER` and `Bearer` carry the same token.
#[tokio::test]
async fn the_bearer_scheme_is_matched_without_regard_to_case() {
    let app = production(Some("scrape-me")).await;
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let res = app
            .client
            .get(app.url("/metrics"))
            .header("authorization", format!("{scheme} scrape-me"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{scheme}");
    }
    let res = app
        .client
        .get(app.url("/metrics"))
        .header("authorization", "Basic scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "another scheme is not a bearer token");
}
