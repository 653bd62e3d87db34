//! The `/login`, `/register`, `/logout` and `/platforms` pages, as a browser
//! without JavaScript uses them.

use crate::support::{PASSWORD, TestApp, session_cookie};

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_register_form_creates_an_account_and_lands_on_platforms() {
    let app = TestApp::spawn().await;
    let res = app.get("/register").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("action=\"/register\"") && html.contains("name=\"password\""));

    let res = app
        .client
        .post(app.url("/register"))
        .form(&[
            ("email", "page@example.com"),
            ("password", PASSWORD),
            ("display_name", "<b>Page</b> & Co"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/platforms");
    assert!(session_cookie(&res).is_some());

    let res = app.get("/platforms").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("&#60;b&#62;Page&#60;/b&#62; &#38; Co"),
        "names are rendered escaped"
    );
    assert!(!html.contains("<b>Page</b>"));
    assert!(html.contains("TikTok") && html.contains("Not connected"));
    assert!(html.contains("name=\"csrf_token\""));
    let stored: String = sqlx::query_scalar("SELECT display_name FROM users")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, "<b>Page</b> & Co", "stored verbatim");
}

#[tokio::test]
async fn form_errors_are_shown_next_to_the_fields() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/register"))
        .form(&[
            ("email", "nope"),
            ("password", "short"),
            ("display_name", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("id=\"email-error\"") && html.contains("id=\"password-error\""));
    assert!(html.contains("value=\"nope\""), "the email is kept");
    assert!(!html.contains("short"), "the password is never echoed");

    let res = app
        .client
        .post(app.url("/login"))
        .form(&[
            ("email", "ghost@example.com"),
            ("password", "wrong password!"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let html = res.text().await.unwrap();
    assert!(html.contains("The email or password is incorrect."));
    assert!(html.contains("value=\"ghost@example.com\""));
}

#[tokio::test]
async fn signing_in_by_form_follows_a_local_next_but_never_an_external_one() {
    let app = TestApp::spawn().await;
    app.sign_up("nav@example.com").await;
    let res = crate::support::new_client()
        .get(app.url("/platforms"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let html_target = location(&res);
    assert_eq!(html_target, "/login?next=%2Fplatforms");

    for (next, expected) in [
        ("/platforms/connect/tiktok", "/platforms/connect/tiktok"),
        ("https://evil.example/", "/platforms"),
        ("//evil.example", "/platforms"),
        ("/\\evil.example", "/platforms"),
    ] {
        let client = crate::support::new_client();
        let res = client
            .post(app.url("/login"))
            .form(&[
                ("email", "nav@example.com"),
                ("password", PASSWORD),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{next}");
        assert_eq!(location(&res), expected, "{next}");
    }
    let page = app.get("/login?next=https://evil.example").await;
    assert_eq!(
        page.status(),
        303,
        "signed in: straight to the safe default"
    );
    assert_eq!(location(&page), "/platforms");
    let anon = crate::support::new_client();
    let html = anon
        .get(app.url("/login?next=https://evil.example"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"next\" value=\"/platforms\""));
}

#[tokio::test]
async fn the_sign_out_form_needs_its_csrf_token() {
    let app = TestApp::spawn().await;
    let csrf = app.sign_up("bye@example.com").await;
    let res = app
        .client
        .post(app.url("/logout"))
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let res = app
        .client
        .post(app.url("/logout"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(app.get("/api/auth/session").await.status(), 401);
}
