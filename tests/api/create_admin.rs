//! `huntaze create-admin` meets accounts that already exist. Anyone may
//! register the address an operator later names, so an existing account is
//! promoted only on request (`--promote`), and promoting it takes it over:
//! its password is replaced and every session it had ends, on every
//! instance. The real binary runs against the test server's database.

use std::time::Duration;

use serde_json::Value;

use crate::both_backends;
use crate::support::cli::{create_admin, stdout_has_human_text};
use crate::support::{PASSWORD, TestApp, json, new_client};
use crate::tiktok::{decide, finish, start};

const OPS: &str = "ops@example.com";
const SQUATTER_PASSWORD: &str = "squatter's own password";

/// Someone registers the operator's address first: their client, and the
/// account's creation time as the API reported it.
async fn squat(app: &TestApp) -> (reqwest::Client, String) {
    let squatter = new_client();
    let (status, body) = app.register_with(&squatter, OPS, SQUATTER_PASSWORD).await;
    assert_eq!(status, 201, "{body}");
    let created = body["user"]["createdAt"]
        .as_str()
        .expect("createdAt")
        .to_owned();
    (squatter, created)
}

/// Like [`squat`], with a display name the squatter chose, on a server
/// that talks to the TikTok sandbox; the operator's runs of create-admin
/// must reach the database directly (no session cache in between).
async fn squat_with_tiktok(backend: crate::support::Backend) -> (TestApp, reqwest::Client) {
    let app = TestApp::builder()
        .backend(backend)
        .tiktok_sandbox()
        .config(|c| c.database.query_cache_ttl_ms = 0)
        .spawn()
        .await;
    let squatter = new_client();
    let res = squatter
        .post(app.url("/api/auth/register"))
        .json(&serde_json::json!({
            "email": OPS,
            "password": SQUATTER_PASSWORD,
            "displayName": "Squatter",
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), 201);
    (app, squatter)
}

/// The operator, signed in after the promotion: the account holds nothing
/// of the squatter's, and the squatter's saved callback URL fails.
async fn operator_sees_a_clean_account(app: &TestApp, saved_callback: &str) -> reqwest::Client {
    let operator = new_client();
    let (code, body) = app.login_with(&operator, OPS, PASSWORD).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["user"]["displayName"], Value::Null, "{body}");
    assert_eq!(
        finish(&operator, saved_callback).await,
        "/platforms/connect/tiktok?error=INVALID_STATE"
    );
    let tiktok = json(operator.get(app.url("/api/platforms/tiktok"))).await;
    assert_eq!(tiktok["connected"], false, "{tiktok}");
    assert_eq!(tiktok["openId"], Value::Null, "{tiktok}");
    let me = json(operator.get(app.url("/api/auth/session"))).await;
    assert_eq!(me["user"]["displayName"], Value::Null, "{me}");
    operator
}

async fn status(client: &reqwest::Client, app: &TestApp, path: &str) -> u16 {
    client
        .get(app.url(path))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

both_backends! {
    async fn an_existing_account_is_not_promoted_without_the_promote_flag(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        let (squatter, _) = squat(&app).await;

        let out = create_admin(&app, &[], OPS, PASSWORD, false).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("--promote"), "the refusal names the flag: {stderr}");
        assert!(!stdout_has_human_text(&out), "{out:?}");
        // Nothing changed: the squatter is still a creator with their own
        // password, and the operator's password opens nothing.
        let me = json(squatter.get(app.url("/api/auth/session"))).await;
        assert_eq!(me["user"]["role"], "creator", "{me}");
        assert_eq!(status(&squatter, &app, "/api/admin/audit").await, 403);
        assert_eq!(app.login_with(&new_client(), OPS, PASSWORD).await.0, 401);
        assert_eq!(
            app.login_with(&new_client(), OPS, SQUATTER_PASSWORD).await.0,
            200
        );
    }

    async fn promoting_an_existing_account_ends_its_sessions_and_replaces_its_password(backend) {
        let app = TestApp::builder()
            .backend(backend)
            // Without Redis a separate process cannot reach the server's
            // in-process session cache (create-admin says so; the Redis path
            // is tested in shared_tier): here the database is what is tested.
            .config(|c| c.database.query_cache_ttl_ms = 0)
            .spawn()
            .await;
        let (squatter, created) = squat(&app).await;
        // A second device of the squatter's.
        let other = new_client();
        assert_eq!(app.login_with(&other, OPS, SQUATTER_PASSWORD).await.0, 200);
        assert_eq!(status(&squatter, &app, "/api/auth/session").await, 200);

        let out = create_admin(&app, &[], OPS, PASSWORD, true).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stdout_has_human_text(&out), "{out:?}");
        assert!(
            stderr.contains(&created),
            "the operator sees when the account was registered ({created}): {stderr}"
        );
        for client in [&squatter, &other] {
            assert_eq!(status(client, &app, "/api/auth/session").await, 401);
            assert_eq!(status(client, &app, "/api/admin/audit").await, 401);
        }
        assert_eq!(
            app.login_with(&new_client(), OPS, SQUATTER_PASSWORD).await.0,
            401,
            "the squatter's password no longer works"
        );
        let operator = new_client();
        let (code, body) = app.login_with(&operator, OPS, PASSWORD).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["user"]["role"], "admin");
        let audit = json(operator.get(app.url("/api/admin/audit"))).await;
        let promoted: Vec<&Value> = audit["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["event"] == "admin_promoted")
            .collect();
        assert_eq!(promoted.len(), 1, "{audit}");
    }

    async fn promotion_drops_the_squatters_pending_connect_and_display_name(backend) {
        let (app, squatter) = squat_with_tiktok(backend).await;
        // The squatter starts a connect, consents at TikTok with his own
        // account and keeps the callback URL instead of following it.
        let saved_callback = decide(&start(&app, &squatter).await, "allow").await;
        assert_eq!(app.count("SELECT COUNT(*) FROM oauth_states").await, 1);

        let out = create_admin(&app, &[], OPS, PASSWORD, true).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        operator_sees_a_clean_account(&app, &saved_callback).await;
        assert!(stderr.contains("1 pending connect attempt(s) removed"), "{stderr}");
        assert!(stderr.contains("display name cleared"), "{stderr}");
        assert!(!stderr.contains("TikTok connection"), "there was none: {stderr}");
        assert_eq!(app.count("SELECT COUNT(*) FROM oauth_states").await, 0);
        assert_eq!(app.count("SELECT COUNT(*) FROM platform_connections").await, 0);
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM audit_events WHERE event = 'admin_promoted' \
                 AND details LIKE '%\"pendingConnects\":1%' \
                 AND details LIKE '%\"displayNameCleared\":true%'"
            )
            .await,
            1,
            "the audit event says what was removed"
        );
    }

    // Without Redis a running instance may still accept the squatter's
    // cached session for a while: it must not be able to start a connect
    // that would leave a state (or a connection) on the admin's account.
    async fn a_session_still_cached_after_the_promotion_cannot_start_a_connect(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .tiktok_sandbox()
            .config(|c| c.database.query_cache_ttl_ms = 120_000)
            .spawn()
            .await;
        let (squatter, _) = squat(&app).await;
        assert_eq!(status(&squatter, &app, "/api/auth/session").await, 200, "cached");

        let out = create_admin(&app, &[], OPS, PASSWORD, true).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        assert_eq!(status(&squatter, &app, "/api/auth/tiktok").await, 401);
        let res = squatter
            .get(app.url("/api/auth/tiktok"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("start");
        assert_eq!(res.status(), 302);
        let to = res.headers()["location"].to_str().unwrap_or_default().to_owned();
        assert!(to.starts_with("/login"), "{to}");
        assert_eq!(app.count("SELECT COUNT(*) FROM oauth_states").await, 0);
    }

    // The squatter's callback spent its state before the promotion and
    // reaches the connection's write after it (TikTok answered slowly):
    // nothing is connected to the account the operator now holds.
    async fn a_callback_that_outlives_the_promotion_connects_nothing(backend) {
        use huntaze::tiktok_sandbox::{Endpoint, Fault};
        let (app, squatter) = squat_with_tiktok(backend).await;
        let callback = decide(&start(&app, &squatter).await, "allow").await;
        app.sandbox
            .as_ref()
            .expect("sandbox")
            .inject(Endpoint::Token, Fault::Slow { ms: 3_000 }, 1);
        let finishing = tokio::spawn({
            let squatter = squatter.clone();
            async move { finish(&squatter, &callback).await }
        });
        // The state is spent at once; the exchange then waits at TikTok.
        let spent = crate::support::eventually(std::time::Duration::from_secs(2), || async {
            app.count("SELECT COUNT(*) FROM oauth_states").await == 0
        })
        .await;
        assert!(spent, "the callback took its state");

        let out = create_admin(&app, &[], OPS, PASSWORD, true).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        assert_eq!(
            finishing.await.expect("callback"),
            "/platforms/connect/tiktok?error=SESSION_ENDED"
        );
        assert_eq!(app.count("SELECT COUNT(*) FROM platform_connections").await, 0);
    }

    async fn promotion_drops_the_squatters_tiktok_connection(backend) {
        let (app, squatter) = squat_with_tiktok(backend).await;
        let connected = finish(&squatter, &decide(&start(&app, &squatter).await, "allow").await).await;
        assert_eq!(connected, "/platforms/connect/tiktok?status=connected");
        let before = json(squatter.get(app.url("/api/platforms/tiktok"))).await;
        assert_eq!(before["connected"], true, "{before}");
        let open_id = before["openId"].as_str().expect("openId").to_owned();
        // and one more flow left pending, its callback kept for later
        let saved_callback = decide(&start(&app, &squatter).await, "allow").await;

        let out = create_admin(&app, &[], OPS, PASSWORD, true).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("TikTok connection (open id {open_id}) removed")),
            "{stderr}"
        );
        assert!(stderr.contains("1 pending connect attempt(s) removed"), "{stderr}");
        assert_eq!(app.count("SELECT COUNT(*) FROM platform_connections").await, 0);
        let operator = operator_sees_a_clean_account(&app, &saved_callback).await;
        // The operator's own connect works on the promoted account.
        let own = finish(&operator, &decide(&start(&app, &operator).await, "allow").await).await;
        assert_eq!(own, "/platforms/connect/tiktok?status=connected");
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM audit_events WHERE event = 'admin_promoted' \
                 AND details LIKE '%\"tiktok\"%'"
            )
            .await,
            1,
            "the audit event names the removed connection"
        );
    }

    async fn create_admin_without_promote_still_creates_a_new_account(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;

        let out = create_admin(&app, &[], "Boss@Example.com", PASSWORD, false).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("boss@example.com is an admin"), "{stderr}");
        let operator = new_client();
        let (code, body) = app.login_with(&operator, "boss@example.com", PASSWORD).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["user"]["role"], "admin");
        assert_eq!(status(&operator, &app, "/api/admin/audit").await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_password_is_refused_before_anything_is_written() {
    let app = TestApp::spawn().await;
    let out = create_admin(&app, &[], OPS, "short", false).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(app.login_with(&new_client(), OPS, "short").await.0, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
}

/// Redis named but unreachable: the promotion still lands in the database
/// (sessions deleted there), and the operator is told that other instances
/// may honour their cached copies until those expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_with_redis_unreachable_still_ends_the_sessions_and_says_what_may_lag() {
    let app = TestApp::builder()
        .config(|c| c.database.query_cache_ttl_ms = 0)
        .spawn()
        .await;
    let (squatter, _) = squat(&app).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let redis = format!("redis://127.0.0.1:{closed}");

    let out = tokio::time::timeout(
        Duration::from_secs(60),
        create_admin(
            &app,
            &[
                ("HUNTAZE_REDIS_URL", redis.as_str()),
                ("HUNTAZE_REDIS_TIMEOUT_MS", "200"),
            ],
            OPS,
            PASSWORD,
            true,
        ),
    )
    .await
    .expect("create-admin does not hang on a dead Redis");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Redis"),
        "the operator hears about Redis: {stderr}"
    );
    assert!(
        !stderr.contains(&redis),
        "no address (it may hold a password): {stderr}"
    );
    assert_eq!(status(&squatter, &app, "/api/auth/session").await, 401);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions").await,
        0,
        "the squatter's sessions are gone from the database"
    );
}
