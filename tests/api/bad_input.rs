//! Garbage in: a clear 4xx in the error format, never a 500, never a crash.

use crate::support::TestApp;

async fn post_echo(app: &TestApp, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url("/api/test/echo"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn deeply_nested_json_is_rejected_with_400() {
    let app = TestApp::builder()
        .config(|c| c.server.body_limit_bytes = 1 << 20)
        .spawn()
        .await;
    let depth = 100_000;
    let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let res = post_echo(&app, body).await;
    assert_eq!(res.status(), 400);
    let code = res.json::<serde_json::Value>().await.unwrap()["error"]["code"].clone();
    assert!(
        code == "BAD_REQUEST" || code == "VALIDATION_ERROR",
        "{code}"
    );
    assert_eq!(app.get("/livez").await.status(), 200);
}

#[tokio::test]
async fn invalid_utf8_is_rejected_with_400() {
    let app = TestApp::spawn().await;
    let mut body = br#"{"name":""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    body.extend_from_slice(br#"","count":1}"#);
    let res = post_echo(&app, body).await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn control_characters_and_markup_are_data_not_errors() {
    let app = TestApp::spawn().await;
    let res = post_echo(
        &app,
        br#"{"name":"<script>alert(1)</script>\u0000'; DROP TABLE users;--","count":1}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert!(v["name"].as_str().unwrap().contains("DROP TABLE"));
}

#[tokio::test]
async fn absurd_headers_get_a_4xx_and_the_server_survives() {
    let app = TestApp::spawn().await;
    // Past hyper's header buffer the connection gets 431 (or is closed).
    let res = app
        .client
        .get(app.url("/api/health"))
        .header("x-huge", "a".repeat(1_000_000))
        .send()
        .await;
    if let Ok(res) = res {
        assert_eq!(res.status(), 431);
    }
    let res = app
        .client
        .get(app.url("/"))
        .header("accept-encoding", "br;q=banana, gzip;q=-7, ".repeat(500))
        .header("if-none-match", "\"".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.get("/livez").await.status(), 200);
}

#[tokio::test]
async fn path_traversal_and_odd_paths_are_404_not_500() {
    let app = TestApp::spawn().await;
    for path in [
        "/assets/../Cargo.toml",
        "/assets/%2e%2e%2fCargo.toml",
        "/assets/app.css",
        "/api/health/%00",
        "/api/health/nope",
        "/%ff%fe",
    ] {
        let status = app.get(path).await.status();
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
}
