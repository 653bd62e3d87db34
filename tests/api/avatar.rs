//! The avatar route (`/platforms/connect/tiktok/avatar`) against a local
//! upstream that plays TikTok's API and CDN: it serves an avatar, redirects
//! to another host, streams an endless body, and answers things that are
//! not images. The server fetches from the API's own origin (the upstream,
//! on loopback) and from allowlisted hosts that resolve to public addresses
//! only.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

use crate::support::{TestApp, eventually};

const PNG: &[u8] = include_bytes!("../../src/tiktok/sandbox/avatar.png");

struct Upstream {
    base: String,
    port: u16,
    /// Requests received, per path.
    hits: Arc<std::sync::Mutex<Vec<String>>>,
    /// Set when the endless body's stream is dropped (its reader went away).
    endless_dropped: Arc<AtomicBool>,
    endless_chunks: Arc<AtomicUsize>,
}

impl Upstream {
    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

/// Sets its flag when dropped.
struct OnDrop(Arc<AtomicBool>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let endless_dropped = Arc::new(AtomicBool::new(false));
    let endless_chunks = Arc::new(AtomicUsize::new(0));
    let (dropped, chunks) = (endless_dropped.clone(), endless_chunks.clone());
    let app = Router::new()
        .route(
            "/avatar.png",
            get(|| async { ([(CONTENT_TYPE, "image/png")], PNG) }),
        )
        // the same image, one hop away on another host (a name for the
        // same loopback address)
        .route(
            "/away",
            get(move || async move {
                Redirect::temporary(&format!("http://localhost:{port}/avatar.png"))
            }),
        )
        .route(
            "/endless",
            get(move || {
                let guard = OnDrop(dropped.clone());
                let chunks = chunks.clone();
                async move {
                    // 32 KiB every 5 ms (6.4 MB/s): endless, but never a
                    // flood, whoever keeps reading it.
                    let body = futures::stream::unfold(guard, move |guard| {
                        let chunks = chunks.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            chunks.fetch_add(1, Ordering::SeqCst);
                            let chunk = bytes::Bytes::from(vec![0x89u8; 32 * 1024]);
                            Some((Ok::<_, Infallible>(chunk), guard))
                        }
                    });
                    ([(CONTENT_TYPE, "image/png")], Body::from_stream(body)).into_response()
                }
            }),
        )
        .route(
            "/page",
            get(|| async {
                (
                    [(CONTENT_TYPE, "text/html")],
                    "<html><body>hi</body></html>",
                )
            }),
        )
        .route(
            "/page.png",
            get(|| async {
                (
                    [(CONTENT_TYPE, "image/png")],
                    "<html><script>alert(document.cookie)</script></html>",
                )
            }),
        )
        .route(
            "/drawing.svg",
            get(|| async {
                (
                    [(CONTENT_TYPE, "image/svg+xml")],
                    r#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#,
                )
            }),
        )
        .layer(axum::middleware::map_request({
            let hits = hits.clone();
            move |req: axum::extract::Request| {
                let hits = hits.clone();
                async move {
                    hits.lock().unwrap().push(req.uri().path().to_owned());
                    Ok::<_, Infallible>(req)
                }
            }
        }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream {
        base: format!("http://127.0.0.1:{port}"),
        port,
        hits,
        endless_dropped,
        endless_chunks,
    }
}

/// A server whose TikTok API is `up` (so its origin is trusted), with a
/// long TikTok deadline: a fetch that does not stop by itself outlives the
/// test client's 30 s.
async fn server(up: &Upstream, hosts: Option<&'static str>) -> TestApp {
    let base = up.base.clone();
    TestApp::builder()
        .config(move |c| {
            c.tiktok.client_key = Some("avatar-test-key".into());
            c.tiktok.client_secret = Some("avatar-test-secret".to_owned().into());
            c.tiktok.auth_url = format!("{base}/v2/auth/authorize/");
            c.tiktok.api_url = base;
            c.tiktok.timeout_ms = 120_000;
            if let Some(h) = hosts {
                c.tiktok.avatar_hosts = h.into();
            }
        })
        .spawn()
        .await
}

/// Signs up on the app's client and gives that account a TikTok connection
/// whose avatar is `url`.
async fn connected_with_avatar(app: &TestApp, url: &str) {
    app.sign_up("avatar@example.com").await;
    let user_id: String = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind("avatar@example.com")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO platform_connections (id, user_id, platform, status, external_id, avatar_url, created_at, updated_at) \
         VALUES ($1, $2, 'tiktok', 'connected', 'open-id', $3, 0, 0)",
    )
    .bind("conn-1")
    .bind(user_id)
    .bind(url)
    .execute(app.state.db.pool())
    .await
    .unwrap();
}

async fn set_avatar(app: &TestApp, url: &str) {
    sqlx::query("UPDATE platform_connections SET avatar_url = $1")
        .bind(url)
        .execute(app.state.db.pool())
        .await
        .unwrap();
}

async fn avatar(app: &TestApp) -> (u16, String, Vec<u8>) {
    let res = app.get("/platforms/connect/tiktok/avatar").await;
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, res.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn an_avatar_from_the_api_origin_is_served_as_the_image_it_is() {
    let up = upstream().await;
    let app = server(&up, None).await;
    connected_with_avatar(&app, &format!("{}/avatar.png", up.base)).await;
    let (status, ct, body) = avatar(&app).await;
    assert_eq!((status, ct.as_str()), (200, "image/png"));
    assert_eq!(body, PNG);
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    let up = upstream().await;
    let app = server(&up, None).await;
    connected_with_avatar(&app, &format!("{}/away", up.base)).await;
    let (status, _, body) = avatar(&app).await;
    assert_eq!(status, 404);
    assert!(!body.starts_with(b"\x89PNG"));
    assert_eq!(up.hits("/away"), 1);
    assert_eq!(
        up.hits("/avatar.png"),
        0,
        "the other host was never contacted"
    );
}

#[tokio::test]
async fn an_allowlisted_name_that_resolves_to_a_private_address_is_refused() {
    let up = upstream().await;
    // `localhost` is allowlisted here, but resolves to loopback: refused
    // when resolved, so no allowlist entry can reach an internal address.
    let app = server(&up, Some("localhost,tiktokcdn.com")).await;
    connected_with_avatar(&app, &format!("http://localhost:{}/avatar.png", up.port)).await;
    assert_eq!(avatar(&app).await.0, 404);
    assert_eq!(up.hits("/avatar.png"), 0, "never connected");
}

#[tokio::test]
async fn hosts_outside_the_allowlist_are_never_contacted() {
    let up = upstream().await;
    let app = server(&up, None).await;
    connected_with_avatar(&app, "https://p16-sign-va.tiktokcdn.com/a.jpeg").await;
    for url in [
        format!("http://localhost:{}/avatar.png", up.port),
        format!("http://[::1]:{}/avatar.png", up.port),
        format!("http://127.0.0.1:{}/avatar.png", up.port + 1),
        "file:///etc/passwd".to_owned(),
    ] {
        set_avatar(&app, &url).await;
        assert_eq!(avatar(&app).await.0, 404, "{url}");
    }
    assert_eq!(up.hits("/avatar.png"), 0);
}

#[tokio::test]
async fn an_endless_body_is_abandoned_at_the_size_cap() {
    let up = upstream().await;
    let app = server(&up, None).await;
    connected_with_avatar(&app, &format!("{}/endless", up.base)).await;
    // Without the cap this waits for the 120 s TikTok deadline and the test
    // client gives up at 30 s.
    assert_eq!(avatar(&app).await.0, 404);
    assert!(
        eventually(Duration::from_secs(10), || async {
            up.endless_dropped.load(Ordering::SeqCst)
        })
        .await,
        "the upstream saw its reader go away"
    );
    // The cap (1 MiB) is 32 chunks; reading on to the deadline would have
    // taken thousands.
    let sent = up.endless_chunks.load(Ordering::SeqCst);
    assert!(sent < 320, "{sent} chunks of 32 KiB were produced");
}

#[tokio::test]
async fn only_raster_images_that_are_what_they_claim_are_served() {
    let up = upstream().await;
    let app = server(&up, None).await;
    connected_with_avatar(&app, "https://p16-sign-va.tiktokcdn.com/a.jpeg").await;
    for path in ["/page", "/page.png", "/drawing.svg"] {
        set_avatar(&app, &format!("{}{path}", up.base)).await;
        let (status, ct, _) = avatar(&app).await;
        assert_eq!(status, 404, "{path}: {ct}");
        assert_eq!(up.hits(path), 1, "{path} was fetched and refused");
    }
}
