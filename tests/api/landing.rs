//! `/`: rendered ahead of time, served from memory in every encoding with a
//! strong ETag, and still served when the database fails.

use std::io::Read;
use std::time::Duration;

use crate::support::{TestApp, eventually};

async fn fetch(app: &TestApp, accept_encoding: Option<&str>) -> reqwest::Response {
    let mut req = app.raw.get(app.url("/"));
    if let Some(ae) = accept_encoding {
        req = req.header("accept-encoding", ae);
    }
    req.send().await.unwrap()
}

fn decode(encoding: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        None => out.extend_from_slice(body),
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("zstd") => out = zstd::decode_all(body).unwrap(),
        Some(other) => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test]
async fn the_landing_page_is_a_real_page_with_the_caching_contract() {
    let app = TestApp::spawn().await;
    let res = fetch(&app, None).await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        h["cache-control"],
        "public, max-age=60, stale-while-revalidate=300, stale-if-error=86400"
    );
    assert_eq!(h["vary"], "Accept-Encoding");
    let etag = h["etag"].to_str().unwrap();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong etag: {etag}"
    );
    let html = res.text().await.unwrap();
    for needle in [
        "<html lang=\"en\">",
        "name=\"viewport\"",
        "creators registered",
        "platforms connected",
        "href=\"/register\"",
        "href=\"/login\"",
        "TikTok",
        "loading=\"lazy\"",
        "<style>",
    ] {
        assert!(html.contains(needle), "landing page lacks {needle}");
    }
    assert!(!html.contains("<script>"), "no inline script under the CSP");
}

#[tokio::test]
async fn every_encoding_decompresses_to_the_identity_bytes() {
    let app = TestApp::spawn().await;
    let identity = fetch(&app, None).await;
    assert!(identity.headers().get("content-encoding").is_none());
    let identity = identity.bytes().await.unwrap().to_vec();
    for (ae, expected) in [
        ("br", "br"),
        ("gzip", "gzip"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "br"),
        ("gzip;q=1, br;q=0.1", "gzip"),
    ] {
        let res = fetch(&app, Some(ae)).await;
        let enc = res.headers()["content-encoding"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(enc, expected, "Accept-Encoding: {ae}");
        let body = res.bytes().await.unwrap();
        assert!(body.len() < identity.len());
        assert_eq!(decode(Some(&enc), &body), identity, "{enc} round trip");
    }
    let res = fetch(&app, Some("identity")).await;
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.bytes().await.unwrap().to_vec(), identity);
}

#[tokio::test]
async fn each_variant_states_its_length_and_carries_the_security_headers() {
    // The 200's headers are built once per variant (length included), not
    // per request: each must still be that variant's own.
    let app = TestApp::spawn().await;
    for ae in [None, Some("br"), Some("gzip"), Some("zstd")] {
        let res = fetch(&app, ae).await;
        let h = res.headers().clone();
        let body = res.bytes().await.unwrap();
        assert_eq!(
            h["content-length"],
            body.len().to_string().as_str(),
            "{ae:?}"
        );
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.contains_key("referrer-policy"));
        assert!(h.contains_key("x-request-id"));
        let mut head = app.raw.head(app.url("/"));
        if let Some(ae) = ae {
            head = head.header("accept-encoding", ae);
        }
        let head = head.send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()["content-length"],
            h["content-length"],
            "HEAD {ae:?}"
        );
        assert!(head.bytes().await.unwrap().is_empty());
    }
    let etag = fetch(&app, Some("br")).await.headers()["etag"].clone();
    let res = app
        .raw
        .get(app.url("/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert!(res.headers().contains_key("content-security-policy"));
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_without_a_body() {
    let app = TestApp::spawn().await;
    let first = fetch(&app, Some("br")).await;
    let etag = first.headers()["etag"].clone();
    let res = app
        .raw
        .get(app.url("/"))
        .header("accept-encoding", "br")
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], etag);
    assert!(res.bytes().await.unwrap().is_empty());

    let res = app
        .raw
        .get(app.url("/"))
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn dynamic_responses_are_compressed_when_large_enough() {
    let app = TestApp::spawn().await;
    let res = app
        .raw
        .get(app.url("/api/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let body = res.bytes().await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&decode(Some("gzip"), &body)).unwrap();
    assert!(doc["openapi"].is_string());
    // tiny bodies are not worth it
    let res = app
        .raw
        .get(app.url("/livez"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn assets_have_content_hashed_names_and_immutable_caching() {
    let app = TestApp::spawn().await;
    let html = fetch(&app, None).await.text().await.unwrap();
    let css = html
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|s| s.starts_with("/assets/app.") && s.ends_with(".css"))
        .expect("stylesheet link")
        .to_owned();
    let res = app.raw.get(app.url(&css)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(app.get("/assets/app.0000.css").await.status(), 404);
}

crate::both_backends! {
async fn the_page_shows_live_figures_after_a_background_refresh(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES ('u1', 'a@example.com', 'x', 0, 0)",
    )
    .execute(app.state.db.pool())
    .await
    .unwrap();
    let refreshed = eventually(Duration::from_secs(5), || async {
        app.state
            .landing
            .current()
            .figures
            .is_some_and(|f| f.creators == 1)
    })
    .await;
    assert!(
        refreshed,
        "the background refresh picked up the new creator"
    );
    let html = fetch(&app, None).await.text().await.unwrap();
    assert!(html.contains("<strong>1</strong><span>creators registered"));
}
}

#[tokio::test]
async fn the_landing_page_keeps_answering_while_the_database_file_is_unavailable() {
    let app = TestApp::spawn().await;
    let before = fetch(&app, None).await;
    let etag = before.headers()["etag"].clone();
    let before = before.bytes().await.unwrap();

    // Cut the database: the file is replaced by garbage under the open pool.
    let db_file = app.data_dir.path().join("huntaze.db");
    let wal_file = app.data_dir.path().join("huntaze.db-wal");
    // A consistent copy: fold the WAL into the file first. Background tasks
    // write every few hundred ms (health probes, rollups); without this a
    // checkpoint between the two reads pairs a file and a WAL that do not
    // belong together, and the "restored" database has no tables (seen
    // under a loaded full run).
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(app.state.db.pool())
        .await
        .unwrap();
    let original = std::fs::read(&db_file).unwrap();
    let original_wal = std::fs::read(&wal_file).unwrap_or_default();
    // Overwritten in place, never truncated: SQLite maps `-shm` into memory,
    // and shrinking a mapped file kills the process with SIGBUS (seen in CI).
    for suffix in ["", "-wal", "-shm"] {
        let p = app.data_dir.path().join(format!("huntaze.db{suffix}"));
        if let Ok(len) = std::fs::metadata(&p).map(|m| m.len()) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all(&vec![0x42u8; len as usize]).unwrap();
        }
    }
    assert!(
        app.state.landing.refresh().await.is_err(),
        "refresh notices the outage"
    );

    for _ in 0..20 {
        let res = fetch(&app, None).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["etag"],
            etag,
            "the last good render is served"
        );
        assert_eq!(res.bytes().await.unwrap(), before);
    }
    let res = app.get("/api/test/db").await;
    assert_eq!(res.status(), 503, "a database read answers 503, never 500");
    let unhealthy = eventually(Duration::from_secs(5), || async {
        app.get("/api/health/database").await.status() == 503
    })
    .await;
    assert!(
        unhealthy,
        "database health turns unhealthy within a sampling interval"
    );
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert!(res.headers().contains_key("retry-after"));

    // Put the database back: the server recovers by itself.
    std::fs::write(&db_file, original).unwrap();
    std::fs::write(&wal_file, original_wal).unwrap();
    let _ = std::fs::remove_file(app.data_dir.path().join("huntaze.db-shm"));
    // A liveness bound, not a speed check: generous, because the full suite
    // runs on two shared cores.
    let recovered = eventually(Duration::from_secs(30), || async {
        app.get("/api/test/db").await.status() == 200
    })
    .await;
    assert!(recovered, "reads work again without a restart");
    let healthy = eventually(Duration::from_secs(5), || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
    assert!(healthy, "ready again once the database is back");
}
