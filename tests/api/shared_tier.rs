//! The Redis tier with two instances in one process, on one PostgreSQL
//! database and one Redis: sessions, invalidations, rate limits and landing
//! figures are shared; a Redis outage falls back to local behaviour without
//! a 5xx and recovers by itself. (Three real processes behind nginx:
//! `scale_out.rs`.)

use std::path::PathBuf;
use std::time::Duration;

use huntaze::Config;
use serde_json::Value;

use crate::support::proxy::{ChaosProxy, Mode};
use crate::support::{Backend, PASSWORD, TestApp, eventually, json, new_client, session_cookie};

const SECRET: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
const TOKEN: &str = "tier-token";

/// Both services present, or the test is skipped (CI requires them).
async fn services(test: &str) -> bool {
    crate::support::pg::available(test).await && crate::support::redis::available(test).await
}

/// The Redis a pair of instances shares: its URL, and for `rediss://` the
/// CA file that signed its certificate (`None`: the system's roots).
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub url: String,
    pub ca_file: Option<PathBuf>,
}

impl Shared {
    /// The machine's Redis, in plain text.
    fn machine() -> Self {
        Self {
            url: crate::support::redis::url(),
            ca_file: None,
        }
    }
}

/// Two instances sharing one database, one Redis (under a fresh prefix) and
/// the same keys. `tweak` applies to both.
async fn pair(
    shared: Shared,
    tweak: impl Fn(&mut Config) + Clone + Send + 'static,
) -> (TestApp, TestApp) {
    let prefix = crate::support::redis::fresh_prefix();
    let common = move |c: &mut Config, db: Option<String>| {
        c.redis.url = Some(shared.url.clone().into());
        c.redis.ca_file = shared.ca_file.clone();
        c.redis.prefix = prefix.clone();
        c.redis.probe_ms = 100;
        c.keys.secret_key = Some(SECRET.to_owned().into());
        c.keys.encryption_key = Some(SECRET.to_owned().into());
        c.monitoring.token = Some(TOKEN.to_owned().into());
        // Long enough that only an invalidation can explain a fresh read.
        c.database.query_cache_ttl_ms = 120_000;
        c.landing.refresh_ms = 600_000;
        if let Some(db) = db {
            c.database.url = Some(db.into());
        }
    };
    let (c1, t1) = (common.clone(), tweak.clone());
    let a = TestApp::builder()
        .backend(Backend::Postgres)
        .config(move |c| {
            c1(c, None);
            t1(c);
        })
        .spawn()
        .await;
    let url = a.pg.as_ref().expect("pg").url.clone();
    let b = TestApp::builder()
        .config(move |c| {
            common(c, Some(url));
            tweak(c);
        })
        .spawn()
        .await;
    (a, b)
}

/// `GET /api/auth/session` on `app` with a session cookie made elsewhere.
async fn session_status(app: &TestApp, cookie: &str) -> u16 {
    app.raw
        .get(app.url("/api/auth/session"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("session request")
        .status()
        .as_u16()
}

async fn register(app: &TestApp, email: &str) -> (String, String) {
    let res = app
        .raw
        .post(app.url("/api/auth/register"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), 201);
    let cookie = session_cookie(&res).expect("session cookie");
    let cookie = cookie.split(';').next().unwrap_or_default().to_owned();
    let body: Value = res.json().await.expect("json");
    (
        cookie,
        body["csrfToken"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A cookie-authenticated write (logout, revoke-all) on `app`: its status.
async fn signed_write(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: &str,
) -> reqwest::StatusCode {
    app.raw
        .request(method, app.url(path))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .expect("write")
        .status()
}

pub(crate) async fn redis_detail(app: &TestApp) -> Value {
    let body = json(
        app.raw
            .get(app.url("/api/health/external"))
            .bearer_auth(TOKEN),
    )
    .await;
    body["details"]["redis"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_works_on_every_instance_and_its_end_is_seen_everywhere() {
    if !services("shared_tier::session").await {
        return;
    }
    sessions_are_shared(Shared::machine()).await;
}

/// A session made on one instance works on the other, and its end
/// (logout, revoke-all) is seen there at once.
pub(crate) async fn sessions_are_shared(shared: Shared) {
    let (a, b) = pair(shared, |_| {}).await;
    let (cookie, csrf) = register(&a, "across@example.com").await;
    // B knows the session (and now caches it for two minutes).
    assert_eq!(session_status(&b, &cookie).await, 200);
    assert_eq!(session_status(&b, &cookie).await, 200);
    // Logout on A: B must stop honouring it at once, not after its TTL.
    let status = signed_write(
        &a,
        reqwest::Method::POST,
        "/api/auth/logout",
        &cookie,
        &csrf,
    )
    .await;
    assert!(status.is_success(), "logout: {}", status);
    assert!(
        eventually(Duration::from_secs(3), || async {
            session_status(&b, &cookie).await == 401
        })
        .await,
        "B still honours a session A ended"
    );

    // Revoke-all names every session of the user, on every instance.
    let (c1, csrf1) = register(&a, "devices@example.com").await;
    let res = b
        .raw
        .post(b.url("/api/auth/login"))
        .json(&serde_json::json!({ "email": "devices@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let c2 = session_cookie(&res)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(session_status(&b, &c1).await, 200);
    assert_eq!(session_status(&b, &c2).await, 200);
    let status = signed_write(
        &a,
        reqwest::Method::DELETE,
        "/api/auth/sessions",
        &c1,
        &csrf1,
    )
    .await;
    assert!(status.is_success(), "revoke-all: {}", status);
    assert!(
        eventually(Duration::from_secs(3), || async {
            session_status(&b, &c1).await == 401 && session_status(&b, &c2).await == 401
        })
        .await,
        "B still honours sessions revoked on A"
    );
}

/// `create-admin --promote` runs in a process of its own: the sessions it
/// ends must stop working on every instance at once, not when each
/// instance's cached copy expires (two minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_from_the_command_line_ends_sessions_cached_on_every_instance() {
    if !services("shared_tier::promote").await {
        return;
    }
    promotions_end_sessions_everywhere(Shared::machine()).await;
}

/// `create-admin --promote`, a process of its own on the same Redis, ends
/// the sessions both instances cache.
pub(crate) async fn promotions_end_sessions_everywhere(shared: Shared) {
    let (a, b) = pair(shared.clone(), |_| {}).await;
    let (cookie, _) = register(&a, "ops@example.com").await;
    // B caches the session (and A the user behind it).
    assert_eq!(session_status(&b, &cookie).await, 200);
    assert_eq!(session_status(&b, &cookie).await, 200);
    assert_eq!(session_status(&a, &cookie).await, 200);

    let prefix = a.state.config.redis.prefix.clone();
    let ca_file = shared
        .ca_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut env = vec![
        ("HUNTAZE_REDIS_URL", shared.url.as_str()),
        ("HUNTAZE_REDIS_PREFIX", prefix.as_str()),
    ];
    if shared.ca_file.is_some() {
        env.push(("HUNTAZE_REDIS_CA_FILE", ca_file.as_str()));
    }
    let out = crate::support::cli::create_admin(
        &a,
        &env,
        "ops@example.com",
        "the operator's new password",
        true,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for app in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(3), || async {
                session_status(app, &cookie).await == 401
            })
            .await,
            "{} still honours a session the promotion ended",
            app.base
        );
        let audit = app
            .raw
            .get(app.url("/api/admin/audit"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("audit request");
        assert_eq!(audit.status(), 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_and_lockouts_hold_across_instances() {
    if !services("shared_tier::limits").await {
        return;
    }
    login_limits_are_shared(Shared::machine()).await;
}

/// Sign-in rate limits and lockouts count across both instances.
pub(crate) async fn login_limits_are_shared(shared: Shared) {
    let (a, b) = pair(shared.clone(), |c| {
        c.accounts.login_per_account_per_minute = 4;
        c.accounts.login_max_failures = 100;
    })
    .await;
    register(&a, "limited@example.com").await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (status, _) = app
            .login_with(&new_client(), "limited@example.com", "wrong password!")
            .await;
        statuses.push(status);
    }
    // Four attempts per minute in all, not four per instance.
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429], "{statuses:?}");

    let (a, b) = pair(shared, |c| {
        c.accounts.login_max_failures = 2;
        c.accounts.login_lockout_ms = 60_000;
    })
    .await;
    register(&a, "locked@example.com").await;
    assert_eq!(
        a.login_with(&new_client(), "locked@example.com", "wrong password!")
            .await
            .0,
        401
    );
    assert_eq!(
        b.login_with(&new_client(), "locked@example.com", "wrong password!")
            .await
            .0,
        401
    );
    // Two failures, one per instance, lock the account on both.
    assert_eq!(
        a.login_with(&new_client(), "locked@example.com", PASSWORD)
            .await
            .0,
        429
    );
    assert_eq!(
        b.login_with(&new_client(), "locked@example.com", PASSWORD)
            .await
            .0,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_starts_are_limited_per_user_across_instances() {
    if !services("shared_tier::connect_limit").await {
        return;
    }
    connect_limits_are_shared(Shared::machine()).await;
}

/// TikTok connect starts are limited per user across both instances.
pub(crate) async fn connect_limits_are_shared(shared: Shared) {
    // Both instances run the built-in sandbox: starting needs no TikTok.
    let (a, b) = pair(shared, |c| {
        c.accounts.tiktok_connect_per_user_per_minute = 4;
    })
    .await;
    let (cookie, _) = register(&a, "eager@example.com").await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &a } else { &b };
        let res = app
            .raw
            .get(app.url("/api/auth/tiktok"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("connect start");
        statuses.push(res.status().as_u16());
    }
    // Four starts per minute in all, not four per instance.
    assert_eq!(statuses, [302, 302, 302, 302, 429, 429], "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_on_one_instance_updates_the_landing_figures_on_all() {
    if !services("shared_tier::landing").await {
        return;
    }
    landing_figures_are_shared(Shared::machine()).await;
}

/// A registration on one instance updates the landing figures on both.
pub(crate) async fn landing_figures_are_shared(shared: Shared) {
    let (a, b) = pair(shared, |_| {}).await;
    let figures = |app: &TestApp| {
        let url = app.url("/");
        let client = app.raw.clone();
        async move {
            let html = client.get(url).send().await.unwrap().text().await.unwrap();
            html.contains("<strong>1</strong><span>creators registered")
        }
    };
    register(&a, "first@example.com").await;
    // Landing refresh is ten minutes here: only the broadcast explains it.
    assert!(
        eventually(Duration::from_secs(5), || figures(&b)).await,
        "B's landing page does not show the new creator"
    );
    assert!(eventually(Duration::from_secs(5), || figures(&a)).await);
    assert_eq!(
        a.state.landing.current().figures,
        b.state.landing.current().figures,
        "both instances show the same figures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_local_mode_without_a_5xx_and_recovers() {
    if !services("shared_tier::outage").await {
        return;
    }
    let upstream = url::Url::parse(&crate::support::redis::url()).unwrap();
    let addr = tokio::net::lookup_host((
        upstream.host_str().unwrap_or("127.0.0.1"),
        upstream.port().unwrap_or(6379),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let proxy = ChaosProxy::start(addr).await;
    let shared = Shared {
        url: format!("redis://127.0.0.1:{}", proxy.port),
        ca_file: None,
    };
    let (a, b) = pair(shared, |c| {
        c.redis.timeout_ms = 200;
        c.accounts.login_per_account_per_minute = 1_000;
        c.accounts.login_max_failures = 1_000;
    })
    .await;
    let (cookie, csrf) = register(&a, "outage@example.com").await;
    assert_eq!(session_status(&b, &cookie).await, 200);
    assert_eq!(redis_detail(&b).await["mode"], "shared");

    for mode in [Mode::Refuse, Mode::Blackhole] {
        proxy.set(mode);
        // Everything keeps answering, without a 5xx.
        for _ in 0..3 {
            assert_eq!(session_status(&a, &cookie).await, 200, "{mode:?}");
            assert_eq!(session_status(&b, &cookie).await, 200, "{mode:?}");
            let (status, _) = b
                .login_with(&new_client(), "outage@example.com", "wrong password!")
                .await;
            assert_eq!(status, 401, "{mode:?}");
            assert_eq!(b.get("/").await.status(), 200);
        }
        assert!(
            eventually(Duration::from_secs(5), || async {
                let body: Value = json(b.raw.get(b.url("/api/health/external"))).await;
                body["status"] == "degraded"
            })
            .await,
            "external health is not degraded while Redis is {mode:?}"
        );
        assert_eq!(redis_detail(&b).await["mode"], "local");
        proxy.set(Mode::Pass);
        assert!(
            eventually(Duration::from_secs(5), || async {
                redis_detail(&b).await["mode"] == "shared"
                    && redis_detail(&a).await["mode"] == "shared"
            })
            .await,
            "not back to shared mode after {mode:?}"
        );
    }

    // A logout while Redis is down is replayed when it returns: B stops
    // honouring the session long before its two-minute cache TTL.
    proxy.set(Mode::Refuse);
    assert!(
        eventually(Duration::from_secs(3), || async {
            !a.state.sessions.redis_up()
        })
        .await
    );
    let status = signed_write(
        &a,
        reqwest::Method::POST,
        "/api/auth/logout",
        &cookie,
        &csrf,
    )
    .await;
    assert!(status.is_success());
    proxy.set(Mode::Pass);
    assert!(
        eventually(Duration::from_secs(5), || async {
            session_status(&b, &cookie).await == 401
        })
        .await,
        "B still honours a session ended during the outage"
    );
}
