//! `/api/openapi.json` describes every `/api` route.

use serde_json::Value;

use crate::support::TestApp;

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_api_route() {
    let app = TestApp::spawn().await;
    let res = app.get("/api/openapi.json").await;
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/health",
        "/api/health/{component}",
        "/api/openapi.json",
    ] {
        assert!(paths.contains_key(p), "missing {p}: {:?}", paths.keys());
    }
    assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());
    assert!(doc["components"]["schemas"]["HealthStatus"].is_object());
}
