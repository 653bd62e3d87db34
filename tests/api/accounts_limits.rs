//! Accounts under pressure: rate limits per IP, the lockout after repeated
//! failures, and concurrent or abandoned logins against it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::accounts::{admin_client, audit_events};
use crate::support::{PASSWORD, TestApp, new_client};

crate::both_backends! {
async fn login_is_rate_limited_per_ip_with_retry_after(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .config(|c| c.accounts.login_per_ip_per_minute = 3)
        .spawn()
        .await;
    for i in 0..3 {
        let (status, _) = app.login_with(&new_client(), &format!("u{i}@example.com"), "whatever pass").await;
        assert_eq!(status, 401);
    }
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({ "email": "u9@example.com", "password": "whatever pass" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "RATE_LIMITED");
}

async fn registration_is_rate_limited_per_ip(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .config(|c| c.accounts.register_per_ip_per_minute = 2)
        .spawn()
        .await;
    for i in 0..2 {
        let (status, _) = app.register_with(&new_client(), &format!("r{i}@example.com"), PASSWORD).await;
        assert_eq!(status, 201);
    }
    let (status, body) = app.register_with(&new_client(), "r9@example.com", PASSWORD).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
}

async fn repeated_failures_lock_the_account_briefly_then_it_unlocks(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .config(|c| {
            c.accounts.login_max_failures = 3;
            c.accounts.login_lockout_ms = 1_000;
        })
        .spawn()
        .await;
    app.sign_up("lock@example.com").await;
    for _ in 0..3 {
        let (status, _) = app.login_with(&new_client(), "lock@example.com", "wrong password!").await;
        assert_eq!(status, 401);
    }
    let res = new_client()
        .post(app.url("/api/auth/login"))
        .json(&json!({ "email": "lock@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "locked even with the right password");
    assert!(res.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _) = app.login_with(&new_client(), "lock@example.com", PASSWORD).await;
    assert_eq!(status, 200, "unlocked after the window");

    let admin = admin_client(&app).await;
    let events: Vec<String> = audit_events(&app, &admin)
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(events.contains(&"lockout".to_owned()), "{events:?}");
}
}

/// Wrong-password logins on one account, all at once: how many passwords
/// were really checked (each check that fails is audited).
async fn concurrent_wrong_logins(app: &TestApp, email: &str, n: usize) -> i64 {
    app.sign_up(email).await;
    let base = app.url("/api/auth/login");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (url, email) = (base.clone(), email.to_owned());
            tokio::spawn(async move {
                new_client()
                    .post(url)
                    .json(&json!({ "email": email, "password": "wrong password!" }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    for t in tasks {
        let status = t.await.expect("login task");
        assert!(status == 401 || status == 429, "{status}");
    }
    app.count("SELECT COUNT(*) FROM audit_events WHERE event = 'login_failure'")
        .await
}

fn lenient_limits(c: &mut huntaze::Config) {
    c.accounts.login_max_failures = 5;
    c.accounts.login_lockout_ms = 60_000;
    c.accounts.login_per_ip_per_minute = 10_000;
    c.accounts.login_per_account_per_minute = 10_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_check_no_more_passwords_than_the_lockout_allows() {
    let app = TestApp::builder().config(lenient_limits).spawn().await;
    let checked = concurrent_wrong_logins(&app, "race@example.com", 100).await;
    assert!(checked <= 5, "{checked} passwords checked, the limit is 5");
    assert!(checked >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_check_no_more_passwords_than_the_lockout_allows_with_redis() {
    if !crate::support::redis::available("concurrent_wrong_logins_with_redis").await {
        return;
    }
    let prefix = format!("race-{}", uuid::Uuid::new_v4().simple());
    let app = TestApp::builder()
        .config(move |c| {
            lenient_limits(c);
            c.redis.url = Some(crate::support::redis::url().into());
            c.redis.prefix = prefix;
            // A busy machine must not push the tier into its local fallback
            // halfway (two counters then, each with its own limit).
            c.redis.timeout_ms = 5_000;
        })
        .spawn()
        .await;
    let checked = concurrent_wrong_logins(&app, "race@example.com", 100).await;
    assert!(checked <= 5, "{checked} passwords checked, the limit is 5");
    assert!(checked >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_that_could_not_check_a_password_do_not_count_toward_the_lockout() {
    if !crate::support::pg::available("logins_that_could_not_check_a_password").await {
        return;
    }
    let app = TestApp::builder()
        .backend(crate::support::Backend::Postgres)
        .through_proxy()
        .config(|c| {
            lenient_limits(c);
            c.database.acquire_timeout_ms = 500;
        })
        .spawn()
        .await;
    app.sign_up("outage@example.com").await;
    let proxy = app.proxy.as_ref().expect("proxy");
    proxy.set(crate::support::proxy::Mode::Refuse);
    for _ in 0..8 {
        let (status, _) = app
            .login_with(&new_client(), "outage@example.com", PASSWORD)
            .await;
        assert_eq!(status, 503, "the database is cut");
    }
    proxy.set(crate::support::proxy::Mode::Pass);
    let signed_in = crate::support::eventually(Duration::from_secs(10), || async {
        app.login_with(&new_client(), "outage@example.com", PASSWORD)
            .await
            .0
            == 200
    })
    .await;
    assert!(signed_in, "the outage did not lock the account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_abandoned_before_their_check_do_not_lock_the_account() {
    let app = TestApp::builder().config(lenient_limits).spawn().await;
    app.sign_up("abandoned@example.com").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(5))
        .build()
        .expect("client");
    for _ in 0..8 {
        let _ = impatient
            .post(app.url("/api/auth/login"))
            .json(&json!({ "email": "abandoned@example.com", "password": "wrong password!" }))
            .send()
            .await;
    }
    let signed_in = crate::support::eventually(Duration::from_secs(10), || async {
        app.login_with(&new_client(), "abandoned@example.com", PASSWORD)
            .await
            .0
            == 200
    })
    .await;
    assert!(signed_in, "abandoned attempts gave their reservations back");
}
