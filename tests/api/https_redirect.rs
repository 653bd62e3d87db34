//! The plain-HTTP listener beside the HTTPS one: `308` to the public URL's
//! origin over HTTPS with the request's path and query, never to the
//! request's own `Host`; the probes answered, not redirected.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestApp;
use crate::support::tls::{self, Leaf, TestCa};

/// Sends `request` as is and reads the whole answer (the test asks the
/// server to close).
async fn raw(addr: &str, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("answered and closed")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn app_with_redirect(test: &str, public_url: Option<&'static str>) -> Option<TestApp> {
    if !tls::available(test) {
        return None;
    }
    let mut ca = TestCa::new("redirect CA");
    let pair = ca.issue(&Leaf::default());
    let mut b = TestApp::builder()
        .https(&ca, &pair)
        .redirect_listener()
        .config(|c| c.server.shutdown_drain_ms = 1_000);
    if let Some(url) = public_url {
        b = b.config(move |c| c.server.public_url = url.into());
    }
    Some(b.spawn().await)
}

#[tokio::test]
async fn plain_http_is_redirected_308_to_the_public_origin_with_path_and_query() {
    let Some(app) = app_with_redirect("plain_http_is_redirected_308", None).await else {
        return;
    };
    let redirect = app.redirect_base.clone().expect("redirect listener");
    let https_port = app.base.rsplit(':').next().unwrap().to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!("{redirect}/account?tab=tiktok&x=%20y"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        format!("https://127.0.0.1:{https_port}/account?tab=tiktok&x=%20y").as_str(),
        "the public URL's host and port, its scheme switched to https"
    );
    assert!(
        !res.headers().contains_key("strict-transport-security"),
        "no HSTS over plain HTTP"
    );
    let res = client
        .post(format!("{redirect}/api/auth/login"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308, "a POST too (308 keeps the method)");
}

#[tokio::test]
async fn the_host_header_never_chooses_the_target() {
    let Some(app) = app_with_redirect(
        "the_host_header_never_chooses_the_target",
        Some("https://huntaze.example"),
    )
    .await
    else {
        return;
    };
    let addr = app.redirect_base.clone().unwrap().replace("http://", "");
    let res = raw(
        &addr,
        "GET /p?q=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 308"), "{res}");
    assert_eq!(
        header(&res, "location"),
        Some("https://huntaze.example/p?q=1")
    );
    let res = raw(
        &addr,
        "GET http://evil.example/p HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        header(&res, "location"),
        Some("https://huntaze.example/p"),
        "an absolute-form target's authority is ignored: {res}"
    );
    let res = raw(
        &addr,
        "GET //evil.example/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        header(&res, "location"),
        Some("https://huntaze.example//evil.example/"),
        "a path that looks like an authority stays a path: {res}"
    );
}

#[tokio::test]
async fn the_probes_are_answered_on_the_redirect_listener() {
    let Some(mut app) =
        app_with_redirect("the_probes_are_answered_on_the_redirect_listener", None).await
    else {
        return;
    };
    let redirect = app.redirect_base.clone().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for probe in ["/livez", "/readyz"] {
        let res = client
            .get(format!("{redirect}{probe}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{probe}");
        assert!(!res.headers().contains_key("location"));
        assert!(
            !res.headers().contains_key("strict-transport-security"),
            "no HSTS over plain HTTP: {probe}"
        );
    }
    // A draining instance says so on both listeners.
    app.shutdown.trigger();
    let url = format!("{redirect}/readyz");
    let draining = crate::support::eventually(Duration::from_secs(5), || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(draining, "readyz answers 503 on the redirect listener too");
    app.stop().await;
}
