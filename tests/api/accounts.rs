//! Accounts: registration, sign-in, sessions, CSRF, audit, roles — on both
//! database backends. The admin helpers are shared with `accounts_limits`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, new_client, session_cookie};

fn token_of(set_cookie: &str) -> String {
    set_cookie
        .trim_start_matches("huntaze_session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn session_with_token(app: &TestApp, token: &str) -> u16 {
    app.raw
        .get(app.url("/api/auth/session"))
        .header("cookie", format!("huntaze_session={token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub(crate) async fn audit_events(app: &TestApp, admin: &reqwest::Client) -> Vec<Value> {
    let res = admin
        .get(app.url("/api/admin/audit?limit=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["events"].as_array().unwrap().clone()
}

pub(crate) async fn admin_client(app: &TestApp) -> reqwest::Client {
    let admin = new_client();
    app.register_with(&admin, "root@example.com", PASSWORD)
        .await;
    app.promote("root@example.com").await;
    admin
}

crate::both_backends! {
async fn register_creates_the_account_and_signs_it_in(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let res = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": " Ana@Example.com ", "password": PASSWORD, "displayName": "Ana" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let cookie = session_cookie(&res).expect("session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"));
    assert!(!cookie.contains("Secure"), "plain-http loopback keeps its session");
    assert_eq!(token_of(&cookie).len(), 43, "256-bit token");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], "ana@example.com");
    assert_eq!(body["user"]["displayName"], "Ana");
    assert_eq!(body["user"]["role"], "creator");
    assert!(body["user"].get("passwordHash").is_none());
    let csrf = body["csrfToken"].as_str().unwrap().to_owned();

    let res = app.get("/api/auth/session").await;
    assert_eq!(res.status(), 200);
    let s: Value = res.json().await.unwrap();
    assert_eq!(s["user"]["email"], "ana@example.com");
    assert_eq!(s["csrfToken"], csrf);

    let stored: String = sqlx::query_scalar("SELECT token_hash FROM sessions")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert_ne!(stored, token_of(&cookie), "only the token's hash is stored");
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

async fn secure_cookies_follow_an_https_public_url(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .config(|c| c.server.public_url = "https://huntaze.example".into())
        .spawn()
        .await;
    let res = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": "s@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("__Host-huntaze_session="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

async fn invalid_fields_are_each_named_and_nothing_is_written(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let res = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": "not-an-email", "password": "short", "displayName": "x".repeat(51) }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["email", "password", "displayName"]);
    for bad in [
        json!({ "email": "", "password": "" }),
        json!({ "email": format!("{}@example.com", "a".repeat(10_000)), "password": PASSWORD }),
        json!({ "email": "a\u{0}b@example.com", "password": PASSWORD }),
        json!({ "email": "ok@example.com", "password": "aaaaaaaaaaaaaaa" }),
        json!({ "email": "ok@example.com", "password": PASSWORD, "displayName": "bad\u{7}name" }),
        json!({ "email": "ok@example.com", "password": PASSWORD, "role": "admin" }),
        json!({ "email": 42, "password": PASSWORD }),
    ] {
        let res = app.client.post(app.url("/api/auth/register")).json(&bad).send().await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);
}

async fn a_taken_email_is_409_whatever_its_case(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    app.sign_up("dup@example.com").await;
    let (status, body) = app.register_with(&new_client(), "DUP@example.com", PASSWORD).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "EMAIL_TAKEN");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
}

async fn two_simultaneous_registrations_of_one_email_give_one_201_and_one_409(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let (c1, c2) = (new_client(), new_client());
    let (a, b) = tokio::join!(
        app.register_with(&c1, "race@example.com", PASSWORD),
        app.register_with(&c2, "race@example.com", PASSWORD),
    );
    let mut statuses = vec![a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, vec![201, 409], "{a:?} {b:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events WHERE event = 'register'").await, 1);
}

async fn login_works_and_rotates_the_session(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let res = app
        .raw
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": "rot@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let first = token_of(&session_cookie(&res).unwrap());
    let res = app
        .raw
        .post(app.url("/api/auth/login"))
        .header("cookie", format!("huntaze_session={first}"))
        .json(&json!({ "email": "ROT@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let second = token_of(&session_cookie(&res).unwrap());
    assert_ne!(first, second, "a new session at login");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], "rot@example.com");
    assert_eq!(session_with_token(&app, &first).await, 401, "the old session is gone");
    assert_eq!(session_with_token(&app, &second).await, 200);
}

async fn unknown_email_and_wrong_password_get_the_same_answer(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    app.sign_up("known@example.com").await;
    let (s1, mut b1) = app.login_with(&new_client(), "known@example.com", "wrong password!").await;
    let (s2, mut b2) = app.login_with(&new_client(), "nobody@example.com", "wrong password!").await;
    assert_eq!((s1, s2), (401, 401));
    for b in [&mut b1, &mut b2] {
        b.as_object_mut().unwrap().remove("requestId");
        b.as_object_mut().unwrap().remove("timestamp");
    }
    assert_eq!(b1, b2);
    assert_eq!(b1["error"]["code"], "INVALID_CREDENTIALS");
}

async fn logout_ends_the_session_on_the_server(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let res = app
        .raw
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": "out@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let token = token_of(&session_cookie(&res).unwrap());
    let csrf = res.json::<Value>().await.unwrap()["csrfToken"].as_str().unwrap().to_owned();
    let res = app
        .raw
        .post(app.url("/api/auth/logout"))
        .header("cookie", format!("huntaze_session={token}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let cleared = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"));
    assert_eq!(session_with_token(&app, &token).await, 401, "a replayed cookie is dead");
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);
}

async fn state_changes_need_the_csrf_token_and_the_same_origin(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let csrf = app.sign_up("csrf@example.com").await;
    let post = |token: Option<&str>| {
        let mut req = app.client.post(app.url("/api/auth/logout"));
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        req
    };
    for res in [post(None).send().await.unwrap(), post(Some("forged")).send().await.unwrap()] {
        assert_eq!(res.status(), 403);
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "CSRF_FAILED");
    }
    let res = post(Some(&csrf))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "CSRF_FAILED");
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .header("origin", "https://evil.example")
        .json(&json!({ "email": "csrf@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "login CSRF is blocked by origin too");
    assert_eq!(app.get("/api/auth/session").await.status(), 200, "still signed in");
    let res = post(Some(&csrf)).header("sec-fetch-site", "same-origin").send().await.unwrap();
    assert_eq!(res.status(), 204);
}

// The windows leave room for a loaded machine: sign-up (an Argon2 hash)
// plus the first check must fit inside the idle window even when the
// machine is busy, or the first check would already see an expired session.
async fn idle_and_absolute_expiry_end_sessions(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .config(|c| c.accounts.session_idle_ms = 1_500)
        .spawn()
        .await;
    app.sign_up("idle@example.com").await;
    assert_eq!(app.get("/api/auth/session").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(app.get("/api/auth/session").await.status(), 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0, "deleted on sight");

    let app = TestApp::builder()
        .backend(backend)
        .config(|c| c.accounts.session_absolute_ms = 1_500)
        .spawn()
        .await;
    app.sign_up("abs@example.com").await;
    assert_eq!(app.get("/api/auth/session").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(app.get("/api/auth/session").await.status(), 401);
}

async fn every_security_event_is_audited_with_its_context(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let csrf = app.sign_up("audit@example.com").await;
    app.login_with(&new_client(), "audit@example.com", "wrong password!").await;
    app.login_with(&new_client(), "audit@example.com", PASSWORD).await;
    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .header("x-csrf-token", csrf)
        .header("x-request-id", "logout-req-1")
        .header("user-agent", "audit-test/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let admin = admin_client(&app).await;
    let events = audit_events(&app, &admin).await;
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for expected in ["register", "login_failure", "login_success", "logout", "admin_access"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let logout = events.iter().find(|e| e["event"] == "logout").unwrap();
    assert_eq!(logout["requestId"], "logout-req-1");
    assert_eq!(logout["userAgent"], "audit-test/1.0");
    assert_eq!(logout["ip"], "127.0.0.1");
    assert!(logout["userId"].is_string() && logout["timestamp"].is_string());
    let failure = events.iter().find(|e| e["event"] == "login_failure").unwrap();
    assert_eq!(failure["subject"], "audit@example.com");
}

async fn the_audit_api_is_admin_only_and_pages_newest_first(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    assert_eq!(app.get("/api/admin/audit").await.status(), 401);
    app.sign_up("creator@example.com").await;
    let res = app.get("/api/admin/audit").await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "FORBIDDEN");

    let admin = admin_client(&app).await;
    for i in 0..4 {
        app.login_with(&new_client(), &format!("ghost{i}@example.com"), "wrong password!").await;
    }
    let page1: Value = admin.get(app.url("/api/admin/audit?limit=3")).send().await.unwrap().json().await.unwrap();
    let ev1 = page1["events"].as_array().unwrap();
    assert_eq!(ev1.len(), 3);
    let ts: Vec<&str> = ev1.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first: {ts:?}");
    let next = page1["nextBefore"].as_str().unwrap();
    let page2: Value = admin
        .get(app.url(&format!("/api/admin/audit?limit=3&before={next}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ev2 = page2["events"].as_array().unwrap();
    assert!(!ev2.is_empty());
    assert!(ev2.iter().all(|e| ev1.iter().all(|f| f["id"] != e["id"])), "pages do not overlap");
    for bad in ["limit=0", "limit=1000", "limit=x", "before=zz';--"] {
        let res = admin.get(app.url(&format!("/api/admin/audit?{bad}"))).send().await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
}

async fn all_sessions_of_a_user_can_be_revoked(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let csrf = app.sign_up("many@example.com").await;
    let other = new_client();
    app.login_with(&other, "many@example.com", PASSWORD).await;
    assert_eq!(other.get(app.url("/api/auth/session")).send().await.unwrap().status(), 200);
    let res = app
        .client
        .delete(app.url("/api/auth/sessions"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(other.get(app.url("/api/auth/session")).send().await.unwrap().status(), 401);
    assert_eq!(app.get("/api/auth/session").await.status(), 401);
}

async fn auth_health_probes_the_session_store(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let admin = admin_client(&app).await;
    let body: Value = admin.get(app.url("/api/health/auth")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["details"]["sessionStore"], true);
    assert_eq!(body["details"]["signVerify"], true);
    assert_eq!(body["details"]["keysStrong"], true);
    let anon: Value = app.get("/api/health/auth").await.json().await.unwrap();
    assert!(anon.get("details").is_none());
}
}

#[tokio::test]
async fn missing_forged_and_truncated_session_cookies_are_401() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/api/auth/session").await.status(), 401);
    for token in [
        "",
        "abc",
        &"A".repeat(43),
        &"A".repeat(44),
        "../../etc/passwd",
        "%00%00",
    ] {
        assert_eq!(session_with_token(&app, token).await, 401, "{token:?}");
    }
    let res = app
        .raw
        .get(app.url("/api/auth/session"))
        .header("cookie", "garbage;;;==;")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_form_body_to_the_json_api_is_415() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .form(&[("email", "a@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
}
