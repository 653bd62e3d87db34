//! The Redis tier over TLS (`rediss://`), against a `redis-server` of the
//! test's own that speaks TLS only: the shared-tier behaviour (the same
//! tests as `shared_tier.rs`, given a TLS server and its CA), and what a
//! certificate that does not verify does — local fallback with the reason
//! in health, logged once, never a plain-text retry — until it is fixed.

use std::time::Duration;

use huntaze::Config;
use serde_json::Value;

use crate::shared_tier::{self, Shared};
use crate::support::redis::RedisServer;
use crate::support::tls::{Leaf, TestCa};
use crate::support::{PASSWORD, TestApp, eventually, json, new_client};

const TOKEN: &str = "redis-tls-token";

/// A CA of the test's own and a TLS-only Redis serving a certificate it
/// signed for `localhost` and `127.0.0.1`; None (SKIPPED) when openssl or
/// redis-server is missing, unless services are required.
async fn tls_redis(test: &str) -> Option<(TestCa, RedisServer)> {
    if !crate::support::tls::available(test) {
        return None;
    }
    let mut ca = TestCa::new("huntaze redis test CA");
    let pair = ca.issue(&Leaf::default());
    let server = RedisServer::start_tls(test, &pair, &ca.cert).await?;
    Some((ca, server))
}

/// The TLS Redis and PostgreSQL for the two-instance tests.
async fn shared_over_tls(test: &str) -> Option<(TestCa, RedisServer, Shared)> {
    if !crate::support::pg::available(test).await {
        return None;
    }
    let (ca, server) = tls_redis(test).await?;
    let shared = Shared {
        url: server.url(),
        ca_file: Some(ca.cert.clone()),
    };
    Some((ca, server, shared))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_their_end_are_shared_over_tls() {
    let Some((_ca, _server, shared)) = shared_over_tls("redis_tls::sessions").await else {
        return;
    };
    shared_tier::sessions_are_shared(shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_from_the_command_line_reaches_every_instance_over_tls() {
    let Some((_ca, _server, shared)) = shared_over_tls("redis_tls::promote").await else {
        return;
    };
    shared_tier::promotions_end_sessions_everywhere(shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_and_lockouts_hold_across_instances_over_tls() {
    let Some((_ca, _server, shared)) = shared_over_tls("redis_tls::limits").await else {
        return;
    };
    shared_tier::login_limits_are_shared(shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_figures_are_shared_over_tls() {
    let Some((_ca, server, mut shared)) = shared_over_tls("redis_tls::landing").await else {
        return;
    };
    // By name this time: the certificate's DNS name is checked.
    shared.url = server.url_for("localhost");
    shared_tier::landing_figures_are_shared(shared).await;
}

/// One instance (SQLite) on `url`, trusting the CA certificate `ca_file`.
async fn instance(url: String, ca_file: Option<std::path::PathBuf>) -> TestApp {
    TestApp::builder()
        .config(move |c: &mut Config| {
            c.redis.url = Some(url.into());
            c.redis.ca_file = ca_file;
            c.redis.prefix = crate::support::redis::fresh_prefix();
            c.redis.probe_ms = 100;
            c.monitoring.token = Some(TOKEN.to_owned().into());
        })
        .spawn()
        .await
}

/// The `external` health component.
async fn external(app: &TestApp) -> Value {
    json(
        app.raw
            .get(app.url("/api/health/external"))
            .bearer_auth(TOKEN),
    )
    .await
}

/// Waits until `app`'s tier is local with a reason containing every one of
/// `words`; the component.
async fn local_because(app: &TestApp, words: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = external(app).await;
        let redis = &body["details"]["redis"];
        let reason = redis["reason"].as_str().unwrap_or_default();
        if redis["mode"] == "local" && words.iter().all(|w| reason.contains(w)) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not local with a reason naming {words:?}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tier keeps serving without Redis: sign-up and sign-in answer as
/// without Redis at all.
async fn serves_locally(app: &TestApp) {
    let (status, _) = app
        .register_with(&new_client(), "local@example.com", PASSWORD)
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .login_with(&new_client(), "local@example.com", "wrong password!")
        .await;
    assert_eq!(status, 401);
    assert_eq!(app.get("/").await.status(), 200);
}

/// Lines of the tier's one warning for the Redis at `port`.
fn unavailable_lines(port: u16) -> usize {
    let server = format!("127.0.0.1:{port}");
    crate::support::logs::lines(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("redis unavailable"))
            && l["server"] == server.as_str()
    })
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_leaves_the_tier_local_until_the_right_ca_is_trusted() {
    let Some((ca, server)) = tls_redis("redis_tls::wrong_ca").await else {
        return;
    };
    let other = TestCa::new("some other CA");
    let mut app = instance(server.url(), Some(other.cert.clone())).await;
    let body = local_because(&app, &["TLS", "certificate", "UnknownIssuer"]).await;
    assert_eq!(body["status"], "degraded", "{body:#}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("TLS") && message.contains("certificate"),
        "{message}"
    );
    serves_locally(&app).await;
    // Probes keep failing (ten rounds or more at 100 ms): the warning is
    // not repeated for each.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        external(&app).await["details"]["redis"]["mode"],
        "local",
        "never shared while the certificate does not verify"
    );
    assert_eq!(unavailable_lines(server.port), 1, "logged once");
    app.stop().await;

    // Restarted with the CA that signed the server's certificate.
    let app = instance(server.url(), Some(ca.cert.clone())).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            external(&app).await["details"]["redis"]["mode"] == "shared"
        })
        .await,
        "not shared with the right CA: {:#}",
        external(&app).await
    );
    serves_locally(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_returns_once_the_server_presents_a_certificate_it_trusts() {
    let Some((_ca, mut server)) = tls_redis("redis_tls::fixed_on_server").await else {
        return;
    };
    let mut trusted = TestCa::new("the CA the instance trusts");
    let app = instance(server.url(), Some(trusted.cert.clone())).await;
    local_because(&app, &["TLS", "certificate"]).await;
    // The operator gives Redis a certificate from the CA the instance
    // trusts; the instance is not restarted.
    let pair = trusted.issue(&Leaf::default());
    server.stop();
    server.replace_certificate(&pair, &trusted.cert);
    server.resume().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            external(&app).await["details"]["redis"]["mode"] == "shared"
        })
        .await,
        "the probe did not bring the tier back: {:#}",
        external(&app).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_name_is_refused() {
    if !crate::support::tls::available("redis_tls::wrong_host") {
        return;
    }
    let mut ca = TestCa::new("huntaze redis test CA");
    let pair = ca.issue(&Leaf {
        names: &["redis.elsewhere.example"],
        ..Leaf::default()
    });
    let Some(server) = RedisServer::start_tls("redis_tls::wrong_host", &pair, &ca.cert).await
    else {
        return;
    };
    let app = instance(server.url(), Some(ca.cert.clone())).await;
    local_because(&app, &["TLS", "certificate", "not valid for name"]).await;
    serves_locally(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_plain_port_falls_back_without_hanging_or_plain_text() {
    let Some(plain) = RedisServer::start("redis_tls::plain_port").await else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}", plain.port);
    let app = instance(url, None).await;
    // A plain Redis does not answer a TLS hello: the command deadline
    // ends the handshake.
    let body = local_because(&app, &[]).await;
    assert_eq!(body["status"], "degraded", "{body:#}");
    serves_locally(&app).await;
    // Nothing went to the server in plain text.
    let prefix = app.state.config.redis.prefix.clone();
    let client = redis::Client::open(plain.url()).expect("plain client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("plain connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn an_unreadable_redis_ca_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
    config.redis.url = Some("rediss://127.0.0.1:6380".to_owned().into());
    config.redis.ca_file = Some(dir.path().join("no-such-ca.pem"));
    let err = match huntaze::AppBuilder::new(config).build().await {
        Ok(_) => panic!("started with an unreadable HUNTAZE_REDIS_CA_FILE"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("HUNTAZE_REDIS_CA_FILE"), "{err}");
    assert!(err.contains("cannot be read"), "{err}");
}
