//! Database faults on the real PostgreSQL: killed connections, statement
//! timeouts, a full outage (refused and hung), and nothing lost across it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::pg::available;
use crate::support::proxy::Mode;
use crate::support::{Backend, PASSWORD, TestApp, eventually, new_client};

macro_rules! require_postgres {
    ($name:literal) => {
        if !available($name).await {
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_replaced_without_a_single_error() {
    require_postgres!("resilience::killed_connections_are_replaced_without_a_single_error");
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .config(|c| c.database.query_cache_ttl_ms = 0)
        .spawn()
        .await;
    app.sign_up("kill@example.com").await;
    for _ in 0..5 {
        assert_eq!(app.get("/api/auth/session").await.status(), 200);
    }
    let killed = app.pg.as_ref().unwrap().terminate_connections().await;
    assert!(killed >= 1, "the pool had connections to kill");
    for i in 0..10 {
        assert_eq!(app.get("/api/auth/session").await.status(), 200, "read {i}");
    }
    let (status, body) = app
        .register_with(&new_client(), "after-kill@example.com", PASSWORD)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.get("/api/health/database").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_the_statement_timeout_answers_503_and_the_pool_stays_usable() {
    require_postgres!(
        "resilience::a_statement_past_the_statement_timeout_answers_503_and_the_pool_stays_usable"
    );
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .config(|c| c.database.statement_timeout_ms = 300)
        .spawn()
        .await;
    let started = Instant::now();
    let res = app.get("/api/test/db-sleep?ms=5000").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(
        !body.to_string().contains("statement timeout"),
        "no driver text: {body}"
    );
    assert_eq!(app.get("/api/test/db").await.status(), 200);
    assert_eq!(app.get("/api/test/db-sleep?ms=10").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_pages_and_cached_reads_work_writes_get_503_and_it_all_recovers() {
    require_postgres!(
        "resilience::during_an_outage_pages_and_cached_reads_work_writes_get_503_and_it_all_recovers"
    );
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .through_proxy()
        .config(|c| {
            c.database.query_cache_ttl_ms = 200;
            c.database.acquire_timeout_ms = 1_000;
        })
        .spawn()
        .await;
    app.wait_ready().await;
    app.sign_up("outage@example.com").await;
    assert_eq!(app.get("/api/auth/session").await.status(), 200);
    let landing_etag = app.get("/").await.headers()["etag"].clone();

    app.proxy.as_ref().unwrap().set(Mode::Refuse);
    tokio::time::sleep(Duration::from_millis(300)).await; // past the cache's fresh TTL

    let res = app.get("/").await;
    assert_eq!(
        res.status(),
        200,
        "the landing page never waits on the database"
    );
    assert_eq!(res.headers()["etag"], landing_etag);

    let res = app.get("/api/auth/session").await;
    assert_eq!(
        res.status(),
        200,
        "a cached read keeps working (stale on error)"
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["user"]["email"],
        "outage@example.com"
    );

    let started = Instant::now();
    let (status, body) = app
        .register_with(&new_client(), "during@example.com", PASSWORD)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the request deadline"
    );
    let res = new_client()
        .post(app.url("/api/auth/login"))
        .json(&json!({ "email": "outage@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));

    let unhealthy = eventually(Duration::from_secs(3), || async {
        app.get("/api/health/database").await.status() == 503
    })
    .await;
    assert!(
        unhealthy,
        "database health turns unhealthy within a sampling interval"
    );
    assert_eq!(app.get("/api/health").await.status(), 503);
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(app.get("/livez").await.status(), 200);

    app.proxy.as_ref().unwrap().set(Mode::Pass);
    let ready = eventually(Duration::from_secs(5), || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
    assert!(ready, "ready again within seconds, with no restart");
    assert_eq!(app.get("/api/health").await.status(), 200);
    let (status, body) = app
        .register_with(&new_client(), "after@example.com", PASSWORD)
        .await;
    assert_eq!(status, 201, "{body}");
    let cache = app.state.sessions.query_cache_stats().unwrap();
    assert!(cache.stale_served >= 1, "{cache:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_answers_503_within_the_deadline_not_a_hang() {
    require_postgres!("resilience::a_hung_database_answers_503_within_the_deadline_not_a_hang");
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .through_proxy()
        .config(|c| {
            c.database.acquire_timeout_ms = 500;
            c.server.request_timeout_ms = 5_000;
            c.database.query_cache_ttl_ms = 0;
        })
        .spawn()
        .await;
    app.wait_ready().await;
    app.sign_up("hang@example.com").await;
    app.proxy.as_ref().unwrap().set(Mode::Blackhole);
    for path in ["/api/auth/session", "/api/test/db"] {
        let started = Instant::now();
        let res = app.get(path).await;
        assert_eq!(res.status(), 503, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    let (status, _) = app
        .register_with(&new_client(), "hung@example.com", PASSWORD)
        .await;
    assert_eq!(status, 503);
    app.proxy.as_ref().unwrap().set(Mode::Pass);
    let back = eventually(Duration::from_secs(5), || async {
        app.get("/api/auth/session").await.status() == 200
    })
    .await;
    assert!(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_and_nothing_failed_is_half_written() {
    require_postgres!(
        "resilience::nothing_acknowledged_is_lost_and_nothing_failed_is_half_written"
    );
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .through_proxy()
        .config(|c| {
            c.accounts.register_per_ip_per_minute = 100_000;
            c.database.acquire_timeout_ms = 400;
            c.health.interval_ms = 100;
        })
        .spawn()
        .await;
    let base = app.base.clone();
    let writers: Vec<_> = (0..48)
        .map(|i| {
            let url = format!("{base}/api/auth/register");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(60 * i)).await;
                let email = format!("w{i}@example.com");
                let res = new_client()
                    .post(url)
                    .json(&json!({ "email": email, "password": PASSWORD }))
                    .send()
                    .await
                    .unwrap();
                (email, res.status().as_u16())
            })
        })
        .collect();
    let proxy = app.proxy.as_ref().unwrap();
    for mode in [
        Mode::Pass,
        Mode::Refuse,
        Mode::Pass,
        Mode::Blackhole,
        Mode::Pass,
        Mode::Refuse,
        Mode::Pass,
    ] {
        proxy.set(mode);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    proxy.set(Mode::Pass);
    let mut results = Vec::new();
    for w in writers {
        results.push(w.await.unwrap());
    }
    let ok = results.iter().filter(|(_, s)| *s == 201).count();
    let failed = results.iter().filter(|(_, s)| *s == 503).count();
    assert_eq!(
        ok + failed,
        results.len(),
        "only 201 or 503, never 500: {results:?}"
    );
    assert!(
        ok > 0 && failed > 0,
        "the run saw both outcomes: {ok} ok, {failed} failed"
    );

    let ready = eventually(Duration::from_secs(5), || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
    assert!(ready);
    let db = app.state.db.pool();
    for (email, status) in &results {
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(db)
            .await
            .unwrap();
        if *status == 201 {
            assert_eq!(
                users, 1,
                "acknowledged registration {email} is in the database"
            );
        }
        if users == 1 {
            let complete: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM users u \
                 WHERE u.email = $1 \
                   AND EXISTS (SELECT 1 FROM audit_events a WHERE a.user_id = u.id AND a.event = 'register') \
                   AND EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = u.id)",
            )
            .bind(email)
            .fetch_one(db)
            .await
            .unwrap();
            assert_eq!(
                complete, 1,
                "{email} ({status}) was written whole: user, audit event and session"
            );
        }
    }
    let orphans: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM sessions WHERE user_id NOT IN (SELECT id FROM users)) \
              + (SELECT COUNT(*) FROM audit_events WHERE event = 'register' AND user_id NOT IN (SELECT id FROM users))",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "no partial rows");
    let acknowledged_but_failed = results.iter().filter(|(_, s)| *s == 503).count();
    eprintln!("nothing-lost run: {ok} acknowledged, {acknowledged_but_failed} refused with 503");
}

crate::both_backends! {
    async fn a_runaway_statement_is_interrupted_at_the_statement_timeout(backend) {
        // One connection: the statement after the interrupted one runs on
        // the very connection that was interrupted.
        let app = TestApp::builder()
            .backend(backend)
            .config(|c| {
                c.database.statement_timeout_ms = 200;
                c.database.max_connections = 1;
                c.database.min_connections = 0;
            })
            .spawn()
            .await;
        let started = Instant::now();
        let result = sqlx::query_scalar::<_, i64>(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) \
             SELECT COUNT(*) FROM c",
        )
        .fetch_one(app.state.db.pool())
        .await;
        let elapsed = started.elapsed();
        let e = result.expect_err("a count to 10^9 outlives a 200 ms deadline");
        assert!(elapsed < Duration::from_secs(5), "stopped near the deadline: {elapsed:?}");
        assert_eq!(
            huntaze::classify_store_error(&e),
            huntaze::StoreFault::Unavailable,
            "like PostgreSQL's 57014: {e}"
        );
        let report = huntaze::AppError::from(e).report();
        assert_eq!(report.status, 503);
        assert_eq!(report.code, "SERVICE_UNAVAILABLE");
        let one = sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(app.state.db.pool())
            .await
            .expect("the interrupted connection is usable");
        assert_eq!(one, 1);
        // A statement that finishes in time is not touched, however many
        // statements the connection ran before.
        for _ in 0..3 {
            let n = sqlx::query_scalar::<_, i64>(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) \
                 SELECT COUNT(*) FROM c",
            )
            .fetch_one(app.state.db.pool())
            .await
            .expect("a short statement runs");
            assert_eq!(n, 1000);
        }
        assert_eq!(app.get("/api/health/database").await.status(), 200);
    }
}

crate::both_backends! {
    // A server can take requests before its schema is there: it starts while
    // the database is away and applies the migrations in the background once
    // it returns. A write that meets a missing table in that window is the
    // database not being ready, so it answers 503 with Retry-After like any
    // other outage, never 500.
    async fn a_write_that_meets_a_missing_table_answers_503_not_500(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        sqlx::query("DROP TABLE audit_events")
            .execute(app.state.db.pool())
            .await
            .expect("drop a table, as if its migration had not run yet");
        let res = new_client()
            .post(format!("{}/api/auth/register", app.base))
            .json(&json!({ "email": "early@example.com", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 503, "{:?}", res.text().await);
        assert!(res.headers().contains_key("retry-after"));
    }
}

/// PostgreSQL ends a session left idle inside a transaction (the server
/// sets `idle_in_transaction_session_timeout` on its connections, so a
/// network stall in the middle of a registration ends this way): that is the
/// database connection going away, answered 503, not a bug answered 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_ended_by_the_idle_timeout_is_a_transient_fault() {
    require_postgres!("resilience::a_transaction_ended_by_the_idle_timeout_is_a_transient_fault");
    let app = TestApp::builder().backend(Backend::Postgres).spawn().await;
    let mut conn = app.state.db.pool().acquire().await.unwrap();
    sqlx::query("SET idle_in_transaction_session_timeout = 100")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = sqlx::query("SELECT 1")
        .execute(&mut *conn)
        .await
        .expect_err("the session was ended while idle in its transaction");
    assert_eq!(
        huntaze::classify_store_error(&e),
        huntaze::StoreFault::Transient,
        "{e}"
    );
    let report = huntaze::AppError::from(e).report();
    assert_eq!(report.status, 503);
    assert!(report.retry_after.is_some());
}

/// A signed-in caller whose session cannot be looked up because the
/// database is down is not a signed-out caller: routes that need a user
/// answer 503 (or, for a browser on the connect flow, the connect page with
/// the error), never 401 or the sign-in page, which would make clients drop a
/// valid session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_be_looked_up_is_unavailable_not_signed_out() {
    require_postgres!(
        "resilience::a_session_that_cannot_be_looked_up_is_unavailable_not_signed_out"
    );
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .through_proxy()
        .tiktok_sandbox()
        .config(|c| {
            // Every request looks its session up in the database.
            c.database.query_cache_ttl_ms = 0;
        })
        .spawn()
        .await;
    app.wait_ready().await;
    app.sign_up("outage@example.com").await;
    app.proxy.as_ref().unwrap().set(Mode::Refuse);

    let res = app
        .client
        .get(app.url("/api/auth/tiktok"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "API caller");
    assert!(res.headers().contains_key("retry-after"));

    let res = app
        .client
        .get(app.url("/api/auth/tiktok"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "browser");
    let to = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(to, "/platforms/connect/tiktok?error=SERVICE_UNAVAILABLE");

    let res = app
        .client
        .get(app.url("/api/auth/tiktok/callback?code=c&state=s"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let to = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(to, "/platforms/connect/tiktok?error=SERVICE_UNAVAILABLE");

    let res = app
        .client
        .get(app.url("/admin/monitoring"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "the dashboard page");
    let res = app
        .client
        .get(app.url("/api/monitoring/alerts"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "the monitoring API");

    app.proxy.as_ref().unwrap().set(Mode::Pass);
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.client
                .get(app.url("/api/auth/session"))
                .send()
                .await
                .unwrap()
                .status()
                == 200
        })
        .await,
        "the same session works once the database is back"
    );
}
