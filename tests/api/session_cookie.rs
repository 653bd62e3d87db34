//! The session cookie's name and attributes, and cookies planted beside it.
//! Over HTTPS (decided by the public URL; the test server itself is plain
//! HTTP) the cookie is `__Host-huntaze_session`, which a sibling subdomain
//! cannot set; over either scheme a planted cookie of the same name must
//! not shadow a valid one and sign its user out.

use serde_json::json;

use crate::both_backends;
use crate::support::{PASSWORD, TestApp};

const HTTPS: &str = "https://huntaze.example";

/// Registers over `app.raw` and returns the full `Set-Cookie` of the session.
async fn register(app: &TestApp, email: &str) -> String {
    let res = app
        .raw
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), 201);
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("huntaze_session="))
        .expect("a session cookie")
        .to_owned()
}

fn value_of(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("name=value")
}

/// `GET /api/auth/session` with exactly this `Cookie` header.
async fn session_with(app: &TestApp, cookie: &str) -> u16 {
    app.raw
        .get(app.url("/api/auth/session"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("session request")
        .status()
        .as_u16()
}

fn junk() -> String {
    // Well-formed (43 base64url characters) but no session's token.
    "J".repeat(43)
}

both_backends! {
    async fn over_https_the_session_cookie_is_host_prefixed(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .config(|c| c.server.public_url = HTTPS.into())
            .spawn()
            .await;
        let set = register(&app, "host@example.com").await;
        assert!(set.starts_with("__Host-huntaze_session="), "{set}");
        let attrs: Vec<String> = set.split(';').skip(1).map(|a| a.trim().to_ascii_lowercase()).collect();
        assert!(attrs.contains(&"secure".into()), "{set}");
        assert!(attrs.contains(&"path=/".into()), "{set}");
        assert!(attrs.contains(&"httponly".into()), "{set}");
        assert!(!attrs.iter().any(|a| a.starts_with("domain")), "{set}");
        let token = value_of(&set);
        assert_eq!(session_with(&app, &format!("__Host-huntaze_session={token}")).await, 200);

        // Sign-out clears the same name.
        let session: serde_json::Value = app
            .raw
            .get(app.url("/api/auth/session"))
            .header("cookie", format!("__Host-huntaze_session={token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let res = app
            .raw
            .post(app.url("/api/auth/logout"))
            .header("cookie", format!("__Host-huntaze_session={token}"))
            .header("x-csrf-token", session["csrfToken"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let cleared = res.headers()["set-cookie"].to_str().unwrap();
        assert!(cleared.starts_with("__Host-huntaze_session=;"), "{cleared}");
        assert!(cleared.contains("Secure"), "{cleared}");
    }

    async fn over_https_the_plain_cookie_name_is_ignored(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .config(|c| c.server.public_url = HTTPS.into())
            .spawn()
            .await;
        let token = value_of(&register(&app, "plain@example.com").await);
        assert_eq!(session_with(&app, &format!("huntaze_session={token}")).await, 401);
    }

    async fn a_planted_cookie_does_not_sign_the_user_out_over_https(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .config(|c| c.server.public_url = HTTPS.into())
            .spawn()
            .await;
        let token = value_of(&register(&app, "victim@example.com").await);
        // What a sibling subdomain can plant: the plain name, any value.
        let planted = format!("huntaze_session={}; huntaze_session=junk", junk());
        assert_eq!(
            session_with(&app, &format!("{planted}; __Host-huntaze_session={token}")).await,
            200
        );
        assert_eq!(
            session_with(&app, &format!("__Host-huntaze_session={token}; {planted}")).await,
            200
        );
    }

    async fn a_planted_duplicate_does_not_shadow_a_valid_session_over_http(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        let token = value_of(&register(&app, "victim@example.com").await);
        let planted = format!("huntaze_session={}", junk());
        let both = format!("{planted}; huntaze_session={token}");
        assert_eq!(session_with(&app, &both).await, 200, "planted first");
        assert_eq!(
            session_with(&app, &format!("huntaze_session={token}; {planted}")).await,
            200,
            "planted last"
        );
        // The valid session's CSRF token goes with it: writes work too.
        let session: serde_json::Value = app
            .raw
            .get(app.url("/api/auth/session"))
            .header("cookie", &both)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let res = app
            .raw
            .post(app.url("/api/auth/logout"))
            .header("cookie", &both)
            .header("x-csrf-token", session["csrfToken"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(session_with(&app, &format!("huntaze_session={token}")).await, 401);
    }
}

both_backends! {
    async fn a_cookie_that_is_not_ascii_does_not_sign_the_user_out(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .config(|c| c.server.public_url = HTTPS.into())
            .spawn()
            .await;
        let token = value_of(&register(&app, "cafe@example.com").await);
        // Another site on the domain, or an old script, set a UTF-8 value:
        // the header is then not visible ASCII as a whole.
        let cookie = reqwest::header::HeaderValue::from_bytes(
            format!("pref=caf\u{e9}; __Host-huntaze_session={token}").as_bytes(),
        )
        .unwrap();
        let res = app
            .raw
            .get(app.url("/api/auth/session"))
            .header("cookie", cookie.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let page = app
            .raw
            .get(app.url("/platforms"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "the page is served, not a redirect to /login");
    }
}
