//! Bounds on starting the TikTok connect flow: each start stores an OAuth
//! state for its whole lifetime, so one user keeps at most five pending
//! (a new start drops the oldest), and starts are rate-limited per user —
//! 429 with `Retry-After` for API callers, the connect page's message for
//! browsers.

use crate::both_backends;
use crate::support::{TestApp, new_client};
use crate::tiktok::{decide, finish, location, start};

both_backends! {
    async fn only_the_five_newest_connect_starts_stay_pending(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .tiktok_sandbox()
            .config(|c| c.accounts.tiktok_connect_per_user_per_minute = 1_000)
            .spawn()
            .await;
        app.sign_up("tabs@example.com").await;
        let mut starts = Vec::new();
        for _ in 0..20 {
            starts.push(start(&app, &app.client).await);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM oauth_states").await, 5);

        let first = decide(&starts[0], "allow").await;
        assert_eq!(
            finish(&app.client, &first).await,
            "/platforms/connect/tiktok?error=INVALID_STATE",
            "the oldest start was dropped"
        );
        let last = decide(&starts[19], "allow").await;
        assert_eq!(
            finish(&app.client, &last).await,
            "/platforms/connect/tiktok?status=connected"
        );
    }

    async fn concurrent_connect_starts_still_leave_five_pending(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .tiktok_sandbox()
            .config(|c| c.accounts.tiktok_connect_per_user_per_minute = 1_000)
            .spawn()
            .await;
        app.sign_up("tabs@example.com").await;
        let starts: Vec<_> = (0..20)
            .map(|_| {
                let (url, client) = (app.url("/api/auth/tiktok"), app.client.clone());
                tokio::spawn(async move {
                    client.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
                })
            })
            .collect();
        for s in starts {
            assert_eq!(s.await.expect("start task"), 302);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM oauth_states").await, 5);
    }

    async fn connect_starts_are_rate_limited_per_user(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .tiktok_sandbox()
            .config(|c| c.accounts.tiktok_connect_per_user_per_minute = 3)
            .spawn()
            .await;
        app.sign_up("eager@example.com").await;
        for _ in 0..3 {
            start(&app, &app.client).await;
        }

        let api = app.client.get(app.url("/api/auth/tiktok")).send().await.unwrap();
        assert_eq!(api.status(), 429);
        let wait: u64 = api.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        let body: serde_json::Value = api.json().await.unwrap();
        assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");

        let browser = app
            .client
            .get(app.url("/api/auth/tiktok"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(browser.status(), 302);
        let to = location(&browser);
        assert_eq!(to, "/platforms/connect/tiktok?error=RATE_LIMITED");
        let page = app.get(&to).await.text().await.unwrap();
        assert!(page.contains("Please wait a minute"), "a friendly message: {page}");
        assert_eq!(
            app.count("SELECT COUNT(*) FROM oauth_states").await,
            3,
            "refused starts store nothing"
        );

        // The limit is the user's, not everyone's.
        let other = new_client();
        let (status, _) = app.register_with(&other, "other@example.com", crate::support::PASSWORD).await;
        assert_eq!(status, 201);
        start(&app, &other).await;
    }
}
