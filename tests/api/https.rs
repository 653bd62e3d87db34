//! The HTTPS listener with a real TLS client: the protocols it negotiates,
//! the limits and deadlines it keeps over TLS and HTTP/2, what a plain or
//! silent client gets, and that SIGTERM under load over HTTPS loses no
//! request. Certificates come from a throw-away CA (`support::tls`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestApp;
use crate::support::tls::{self, Leaf, TestCa};

/// A CA and a server pair for 127.0.0.1, or `None` (skipped) without
/// openssl.
fn pki(test: &str) -> Option<(TestCa, tls::Pair)> {
    if !tls::available(test) {
        return None;
    }
    let mut ca = TestCa::new("huntaze https test CA");
    let pair = ca.issue(&Leaf::default());
    Some((ca, pair))
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("https://").to_owned()
}

#[tokio::test]
async fn http2_is_negotiated_http11_when_asked_and_tls12_and_13_both_serve() {
    let Some((ca, pair)) = pki("http2_is_negotiated_http11_when_asked") else {
        return;
    };
    let app = TestApp::builder().https(&ca, &pair).spawn().await;
    let ca_pem = ca.cert_pem();

    let h2 = tls::client(&[&ca_pem]).build().unwrap();
    let res = h2.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), Version::HTTP_2, "ALPN picks h2");
    assert_eq!(tls::peer_der(&res), tls::leaf_der(&pair.cert));
    let hsts = res.headers()["strict-transport-security"].to_str().unwrap();
    assert!(hsts.contains("max-age="), "{hsts}");

    let h1 = tls::client(&[&ca_pem]).http1_only().build().unwrap();
    let res = h1.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), Version::HTTP_11);
    assert!(res.headers().contains_key("strict-transport-security"));

    for (name, min, max) in [
        ("1.2", tls::TlsVersion::TLS_1_2, tls::TlsVersion::TLS_1_2),
        ("1.3", tls::TlsVersion::TLS_1_3, tls::TlsVersion::TLS_1_3),
    ] {
        let c = tls::client(&[&ca_pem])
            .tls_version_min(min)
            .tls_version_max(max)
            .build()
            .unwrap();
        let res = c.get(app.url("/livez")).send().await;
        let res = res.unwrap_or_else(|e| panic!("TLS {name}: {e:?}"));
        assert_eq!(res.status(), 200, "TLS {name}");
        assert_eq!(res.version(), Version::HTTP_2, "TLS {name}");
    }

    let untrusting = tls::client(&[&TestCa::new("another CA").cert_pem()])
        .build()
        .unwrap();
    let err = untrusting.get(app.url("/livez")).send().await.unwrap_err();
    assert!(err.is_connect(), "a client without the CA refuses: {err:?}");
}

#[tokio::test]
async fn sign_in_over_https_sets_the_host_prefixed_secure_cookie_with_an_http_public_url() {
    let Some((ca, pair)) = pki("sign_in_over_https_sets_the_host_prefixed_secure_cookie") else {
        return;
    };
    let app = TestApp::builder().https(&ca, &pair).spawn().await;
    assert!(
        app.state.config.server.public_url.starts_with("http://"),
        "the public URL is left at http"
    );
    app.sign_up("tls-cookie@example.com").await;
    let fresh = tls::client(&[&ca.cert_pem()]).build().unwrap();
    let res = fresh
        .post(app.url("/api/auth/login"))
        .json(&serde_json::json!({ "email": "tls-cookie@example.com", "password": crate::support::PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), Version::HTTP_2);
    let cookies: Vec<&str> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let session = cookies
        .iter()
        .find(|c| {
            c.starts_with("__Host-huntaze_session=") && !c.starts_with("__Host-huntaze_session=;")
        })
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert!(session.contains("; Secure"), "{session}");
    assert!(session.contains("Path=/"), "{session}");
    assert!(!session.contains("Domain"), "{session}");
}

#[tokio::test]
async fn the_limits_hold_over_http2() {
    let Some((ca, pair)) = pki("the_limits_hold_over_http2") else {
        return;
    };
    let app = TestApp::builder()
        .https(&ca, &pair)
        .config(|c| {
            c.server.body_limit_bytes = 1024;
            c.server.max_header_bytes = 4096;
            c.server.request_timeout_ms = 1_500;
            c.server.max_in_flight = 1;
        })
        .spawn()
        .await;
    let client = tls::client(&[&ca.cert_pem()]).build().unwrap();

    let big = serde_json::json!({ "name": "x".repeat(4096), "count": 1 });
    let res = client
        .post(app.url("/api/test/echo"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), 413, "body past the limit");

    // Past the head limit h2 answers the stream 431 and resets it, or the
    // client refuses to send what the server's settings do not take.
    let res = client
        .get(app.url("/livez"))
        .header("x-big", "y".repeat(8192))
        .send()
        .await;
    if let Ok(res) = &res {
        assert_eq!(res.status(), 431, "head past the limit");
    }
    let res = client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the connection serves on");

    let res = client
        .get(app.url("/api/test/sleep?ms=5000"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504, "request deadline");

    // One request held: the next one on the same connection is shed.
    let held = {
        let c = client.clone();
        let url = app.url("/api/test/sleep?ms=1000");
        tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
    };
    let metrics = Arc::clone(&app.state.metrics);
    assert!(
        crate::support::eventually(Duration::from_secs(5), || {
            let m = Arc::clone(&metrics);
            async move { m.in_flight() >= 1 }
        })
        .await
    );
    let res = client.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), 503, "shed past the in-flight limit");
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(held.await.unwrap(), 200);
}

#[tokio::test]
async fn many_concurrent_streams_on_one_connection_are_all_answered_and_it_goes_idle() {
    let Some((ca, pair)) = pki("many_concurrent_streams_on_one_connection") else {
        return;
    };
    let app = TestApp::builder()
        .https(&ca, &pair)
        .config(|c| {
            c.server.keep_alive_idle_ms = 1_000;
            c.server.header_read_timeout_ms = 1_000;
        })
        .spawn()
        .await;
    let client = tls::client(&[&ca.cert_pem()]).build().unwrap();
    // One connection first: requests racing for a client's first
    // connection can fail in the client's pool (`CheckoutNoLongerWanted`).
    let res = client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    // More streams than the connection allows at once (128): the client
    // queues the rest, none is refused.
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let c = client.clone();
            let url = app.url("/api/test/sleep?ms=50");
            tokio::spawn(async move {
                let res = c.get(url).send().await.unwrap();
                (res.version(), res.status())
            })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap(),
            (Version::HTTP_2, reqwest::StatusCode::OK)
        );
    }
    // Idle past the keep-alive time, the server sends GOAWAY and closes;
    // the client's next request takes a new connection and is answered.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let res = client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_plain_http_request_to_the_tls_port_fails_cleanly() {
    let Some((ca, pair)) = pki("a_plain_http_request_to_the_tls_port_fails_cleanly") else {
        return;
    };
    let app = TestApp::builder().https(&ca, &pair).spawn().await;
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("the server closes a plain-HTTP connection on its TLS port");
    assert!(
        read.is_err() || !got.starts_with(b"HTTP/"),
        "no HTTP answer: {:?}",
        String::from_utf8_lossy(&got)
    );
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let err = plain
        .get(format!("http://{}/livez", addr(&app)))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    // And the listener serves TLS clients on.
    let res = app.get("/livez").await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_trickles_its_hello_is_closed_at_the_header_timeout() {
    let Some((ca, pair)) = pki("a_client_that_sends_nothing_is_closed_at_the_header_timeout")
    else {
        return;
    };
    let app = TestApp::builder()
        .https(&ca, &pair)
        .config(|c| c.server.header_read_timeout_ms = 300)
        .spawn()
        .await;
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    // A TLS record header announcing a ClientHello, then nothing more.
    let mut trickling = TcpStream::connect(addr(&app)).await.unwrap();
    trickling.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    for tcp in [&mut silent, &mut trickling] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("closed at the header timeout, not held open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // Meanwhile a real client was never held up.
    assert_eq!(app.get("/livez").await.status(), 200);
}

#[derive(Default, Debug)]
struct Tally {
    answered: u32,
    answered_after_trigger: u32,
    lost: Vec<String>,
}

/// Clients that send requests back to back over HTTPS (HTTP/2 or
/// HTTP/1.1) while the server shuts down: every request is answered until
/// the listener is closed and a new connection is refused.
async fn shutdown_under_load(http2: bool) {
    let test = if http2 {
        "sigterm_under_load_over_https_h2"
    } else {
        "sigterm_under_load_over_https_h1"
    };
    let Some((ca, pair)) = pki(test) else {
        return;
    };
    let drain = Duration::from_millis(1_000);
    let mut app = TestApp::builder()
        .https(&ca, &pair)
        .config(move |c| c.server.shutdown_drain_ms = drain.as_millis() as u64)
        .spawn()
        .await;
    let ca_pem = ca.cert_pem();
    let triggered: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let mut b = tls::client(&[&ca_pem]);
            if !http2 {
                b = b.http1_only();
            }
            let client = b.build().unwrap();
            let url = app.url("/livez");
            let triggered = Arc::clone(&triggered);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let give_up = Instant::now() + Duration::from_secs(20);
                while Instant::now() < give_up {
                    match client.get(&url).send().await {
                        Ok(res) => {
                            assert_eq!(res.status(), 200);
                            assert_eq!(
                                res.version(),
                                if http2 {
                                    Version::HTTP_2
                                } else {
                                    Version::HTTP_11
                                }
                            );
                            if res.bytes().await.is_err() {
                                tally.lost.push("body cut".into());
                                continue;
                            }
                            tally.answered += 1;
                            if triggered.get().is_some() {
                                tally.answered_after_trigger += 1;
                            }
                        }
                        // Refused: the listener is closed, the server is done.
                        Err(e) if e.is_connect() => break,
                        Err(e) => tally.lost.push(format!("{e:?}")),
                    }
                }
                tally
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    triggered.get_or_init(Instant::now);
    app.shutdown.trigger();
    let mut tallies = Vec::new();
    for c in clients {
        tallies.push(c.await.unwrap());
    }
    app.stop().await;
    for t in &tallies {
        assert!(t.lost.is_empty(), "requests lost: {tallies:#?}");
        assert!(t.answered_after_trigger > 0, "{tallies:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_over_https_http2_loses_no_request() {
    shutdown_under_load(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_over_https_http11_loses_no_request() {
    shutdown_under_load(false).await;
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_when_the_drain_begins() {
    let Some((ca, pair)) = pki("an_idle_http2_connection_gets_a_goaway") else {
        return;
    };
    let drain = Duration::from_millis(1_500);
    let mut app = TestApp::builder()
        .https(&ca, &pair)
        .config(move |c| c.server.shutdown_drain_ms = drain.as_millis() as u64)
        .spawn()
        .await;
    let client = tls::client(&[&ca.cert_pem()]).build().unwrap();
    let res = client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    app.shutdown.trigger();
    // The pooled connection is shut down gracefully; the client's next
    // request, while the drain lasts, goes to a new connection and is
    // answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503, "draining");
    app.stop().await;
}

/// A TLS connection that negotiated `h2`, as a raw byte stream.
async fn raw_h2(app: &TestApp, ca: &TestCa) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(&ca.cert).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr(app)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// The frame types of everything the server sends until it closes.
async fn frames_until_closed(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .expect("the server closes the connection, not holds it")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len =
            usize::from(got[at]) << 16 | usize::from(got[at + 1]) << 8 | usize::from(got[at + 2]);
        types.push(got[at + 3]);
        at += 9 + len;
    }
    types
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const GOAWAY: u8 = 7;

#[tokio::test]
async fn an_http2_connection_without_a_request_gets_a_goaway_at_the_header_timeout() {
    let Some((ca, pair)) = pki("an_http2_connection_without_a_request_gets_a_goaway") else {
        return;
    };
    let app = TestApp::builder()
        .https(&ca, &pair)
        .config(|c| c.server.header_read_timeout_ms = 300)
        .spawn()
        .await;
    let mut tls = raw_h2(&app, &ca).await;
    tls.write_all(PREFACE).await.unwrap();
    tls.write_all(SETTINGS).await.unwrap();
    tls.flush().await.unwrap();
    let frames = frames_until_closed(&mut tls).await;
    assert!(frames.contains(&GOAWAY), "frames: {frames:?}");
}

#[tokio::test]
async fn handshakes_count_under_the_connection_cap_and_the_header_timeout_frees_them() {
    let Some((ca, pair)) = pki("handshakes_count_under_the_connection_cap") else {
        return;
    };
    const CAP: usize = 2;
    let app = TestApp::builder()
        .https(&ca, &pair)
        .config(|c| {
            c.server.max_connections = Some(CAP);
            c.server.header_read_timeout_ms = 500;
        })
        .spawn()
        .await;
    // Connections that never finish their handshake hold every slot…
    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    // …until the header timeout closes them; the client waiting in the
    // listen queue meanwhile is then served.
    let client = tls::client(&[&ca.cert_pem()]).build().unwrap();
    let res = client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    for tcp in &mut silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("closed at the header timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

/// A client whose flow-control window stays shut takes none of its
/// responses, whatever the socket says (HTTP/2 writes nothing while the
/// window is closed, so no write ever waits): it is closed after the send
/// timeout like an HTTP/1 client that reads nothing, and its place under
/// the connection cap is freed.
#[tokio::test]
async fn an_http2_client_that_takes_none_of_its_responses_is_closed_after_the_send_timeout() {
    let Some((ca, pair)) = pki("an_http2_client_that_takes_none_of_its_responses") else {
        return;
    };
    let app = TestApp::builder()
        .https(&ca, &pair)
        .config(|c| {
            c.server.send_timeout_ms = 500;
            // Only the send timeout may close it.
            c.server.header_read_timeout_ms = 60_000;
            c.server.keep_alive_idle_ms = 60_000;
        })
        .spawn()
        .await;
    let mut tls = raw_h2(&app, &ca).await;
    tls.write_all(PREFACE).await.unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE (4) = 0: no stream may receive data.
    tls.write_all(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0])
        .await
        .unwrap();
    // HEADERS on stream 1, END_STREAM | END_HEADERS: GET https://localhost/
    // (HPACK: :method GET, :scheme https, :path /, :authority localhost).
    let mut headers = vec![0, 0, 14, 1, 0x5, 0, 0, 0, 1, 0x82, 0x87, 0x84, 0x41, 9];
    headers.extend_from_slice(b"localhost");
    tls.write_all(&headers).await.unwrap();
    tls.flush().await.unwrap();
    // Answered with headers but no data (the window is shut), then closed.
    let frames = frames_until_closed(&mut tls).await;
    assert!(frames.contains(&1), "the response's HEADERS: {frames:?}");
    assert!(
        !frames.contains(&0),
        "no DATA through a shut window: {frames:?}"
    );
}
