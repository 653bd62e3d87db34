//! Monitoring through the failures it reports: reads that write nothing
//! (no deadlock between concurrent readers on PostgreSQL), flushes that add
//! up exactly and keep what they could not write, and the `database` alert
//! raised and resolved while the database itself is cut.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::monitoring_alerts::{Receiver, start_receiver};
use crate::support::proxy::Mode;
use crate::support::{Backend, TestApp, eventually};

const TOKEN: &str = "monitoring-token";
const DATABASE_ALERT: &str = "component_unhealthy:database";

fn monitored() -> crate::support::TestAppBuilder {
    TestApp::builder().config(|c| {
        c.monitoring.token = Some(TOKEN.to_owned().into());
    })
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.raw
        .get(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Requests of one route in a dashboard answer.
fn route_requests(dashboard: &Value, route: &str) -> u64 {
    dashboard["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["route"] == route))
        .and_then(|r| r["requests"].as_u64())
        .unwrap_or(0)
}

/// A monitoring API answer (200 and JSON, or the test fails).
async fn monitoring_json(app: &TestApp, path: &str) -> Value {
    let res = app
        .raw
        .get(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("monitoring request");
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.expect("monitoring JSON")
}

async fn dashboard(app: &TestApp) -> Value {
    monitoring_json(app, "/api/monitoring/dashboard?range=15m").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_monitoring_reads_on_postgres_never_fail() {
    if !crate::support::pg::available("concurrent_monitoring_reads_on_postgres_never_fail").await {
        return;
    }
    // Flushes rarely: the readers are the ones that would write.
    let app = monitored()
        .backend(Backend::Postgres)
        .config(|c| c.monitoring.flush_ms = 60_000)
        .spawn()
        .await;
    let app = Arc::new(app);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows_before = app.count("SELECT COUNT(*) FROM metric_rollups").await;
    let paths = [
        "/api/monitoring/scaling",
        "/api/monitoring/dashboard?range=1h",
        "/api/monitoring/health-trends?range=15m",
    ];
    let mut failures = Vec::new();
    for round in 0..5 {
        // new traffic every round, so each read has unwritten rollups
        for _ in 0..20 {
            app.get("/livez").await;
            app.get("/api/health").await;
        }
        let readers: Vec<_> = (0..8)
            .map(|i| {
                let app = Arc::clone(&app);
                let path = paths[i % paths.len()];
                tokio::spawn(async move { (path, status_of(&app, path).await) })
            })
            .collect();
        for r in readers {
            let (path, status) = r.await.expect("reader");
            if status != 200 {
                failures.push((round, path, status));
            }
        }
    }
    assert!(failures.is_empty(), "failed reads: {failures:?}");
    // Reads wrote nothing: the rows are still this instance's to flush.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM metric_rollups").await,
        rows_before,
        "a read wrote monitoring rows"
    );
    // …and they counted the unwritten traffic all the same.
    let d = dashboard(&app).await;
    assert_eq!(route_requests(&d, "GET /livez"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_flushing_the_same_minute_at_once_add_up_exactly() {
    if !crate::support::pg::available("two_instances_flushing_the_same_minute_at_once").await {
        return;
    }
    let a = monitored()
        .backend(Backend::Postgres)
        .config(|c| {
            c.monitoring.flush_ms = 60_000;
            c.instance_id = Some("instance-a".into());
        })
        .spawn()
        .await;
    let url = a.state.config.database.url.clone();
    let b = monitored()
        .config(move |c| {
            c.database.url = url;
            c.monitoring.flush_ms = 60_000;
            c.instance_id = Some("instance-b".into());
        })
        .spawn()
        .await;
    for round in 0..5 {
        for _ in 0..10 {
            a.get("/livez").await;
            b.get("/livez").await;
        }
        // both instances, and two flushes of one instance, at once
        let (x, y, z) = tokio::join!(
            a.state.monitor.flush(),
            b.state.monitor.flush(),
            b.state.monitor.flush()
        );
        assert!(
            x.is_ok() && y.is_ok() && z.is_ok(),
            "round {round}: {x:?} {y:?} {z:?}"
        );
    }
    assert_eq!(
        a.count("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM metric_rollups WHERE route = 'GET /livez'")
            .await,
        100,
        "every request counted once"
    );
    assert_eq!(route_requests(&dashboard(&a).await, "GET /livez"), 100);
    assert_eq!(route_requests(&dashboard(&b).await, "GET /livez"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_keeps_its_rows_for_the_next_one() {
    if !crate::support::pg::available("a_failed_flush_keeps_its_rows_for_the_next_one").await {
        return;
    }
    let app = monitored()
        .backend(Backend::Postgres)
        .through_proxy()
        .config(|c| {
            c.monitoring.flush_ms = 60_000;
            c.database.acquire_timeout_ms = 500;
        })
        .spawn()
        .await;
    for _ in 0..7 {
        app.get("/livez").await;
    }
    // a minute that is over: nothing will be recorded in it again
    let five_minutes_ago = huntaze::now_ms() - 300_000;
    for _ in 0..4 {
        app.state
            .metrics
            .rollups
            .record(five_minutes_ago, "GET /earlier", 1.0, false);
    }
    let proxy = app.proxy.as_ref().expect("proxy");
    proxy.set(Mode::Refuse);
    assert!(app.state.monitor.flush().await.is_err(), "the cut is seen");
    for _ in 0..3 {
        app.get("/livez").await;
    }
    proxy.set(Mode::Pass);
    let written = eventually(Duration::from_secs(10), || async {
        app.state.monitor.flush().await.is_ok()
    })
    .await;
    assert!(written, "the flush works again after the cut");
    assert_eq!(
        app.count("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM metric_rollups WHERE route = 'GET /livez'")
            .await,
        10
    );
    assert_eq!(
        app.count("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM metric_rollups WHERE route = 'GET /earlier'")
            .await,
        4,
        "a finished minute is written after the failure, not dropped"
    );
}

/// Short intervals: the `database` alert's bound is
/// samples × health interval + for + evaluation interval.
fn outage_settings(c: &mut huntaze::Config, hook: String) {
    c.health.interval_ms = 200;
    // Generous: a cut refuses at once, and a busy machine must not look
    // like an outage before it.
    c.health.check_timeout_ms = 2_000;
    c.database.acquire_timeout_ms = 2_000;
    c.monitoring.alert_eval_ms = 200;
    c.monitoring.alert_for_ms = 0;
    c.monitoring.alert_unhealthy_samples = 3;
    c.monitoring.flush_ms = 200;
    c.monitoring.alert_webhook_url = Some(hook);
}

const BOUND_MS: u64 = 3 * 200 + 200;

async fn wait_for(receiver: &Receiver, status: &str, limit: Duration) -> Option<Duration> {
    let began = Instant::now();
    eventually(limit, || async {
        receiver.count(status, DATABASE_ALERT) >= 1
    })
    .await
    .then(|| began.elapsed())
}

/// After a quiet start, cuts the database; returns how long the firing
/// `database` alert took to reach the webhook.
async fn cut_until_the_alert_fires(
    proxy: &crate::support::proxy::ChaosProxy,
    receiver: &Receiver,
) -> Duration {
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.count("firing", DATABASE_ALERT),
        0,
        "the database was fine before the cut"
    );
    proxy.set(Mode::Refuse);
    wait_for(receiver, "firing", Duration::from_secs(15))
        .await
        .expect("the database alert reached the webhook during the outage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_alert_fires_while_the_database_is_cut_and_resolves_after() {
    if !crate::support::pg::available("the_database_alert_fires_while_the_database_is_cut").await {
        return;
    }
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(Arc::clone(&receiver)).await;
    let app = monitored()
        .backend(Backend::Postgres)
        .through_proxy()
        .config(move |c| outage_settings(c, hook))
        .spawn()
        .await;
    let proxy = app.proxy.as_ref().expect("proxy");
    let fired = cut_until_the_alert_fires(proxy, &receiver).await;
    eprintln!(
        "cut → firing notification: {} ms (bound {BOUND_MS} ms + delivery)",
        fired.as_millis()
    );
    assert!(
        fired < Duration::from_millis(BOUND_MS + 4_000),
        "{fired:?} is far past the bound"
    );
    // While the database is down the alert is visible from memory.
    let alerts = monitoring_json(&app, "/api/monitoring/alerts").await;
    assert!(
        alerts["active"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["key"] == DATABASE_ALERT)),
        "{alerts}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.set(Mode::Pass);
    let resolved = wait_for(&receiver, "resolved", Duration::from_secs(20)).await;
    assert!(resolved.is_some(), "the resolution follows the return");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count("firing", DATABASE_ALERT), 1, "fired once");
    assert_eq!(
        receiver.count("resolved", DATABASE_ALERT),
        1,
        "resolved once"
    );

    // The outage is in the history, not a hole: samples taken while the
    // database was cut were written after it came back…
    let written = eventually(Duration::from_secs(5), || async {
        app.count("SELECT COUNT(*) FROM health_samples WHERE component = 'database' AND status = 'unhealthy'")
            .await
            >= 3
    })
    .await;
    assert!(written, "outage samples written after the return");
    let t = monitoring_json(
        &app,
        "/api/monitoring/health-trends?component=database&range=15m",
    )
    .await;
    let during: Vec<_> = t
        .as_array()
        .expect("trend array")
        .iter()
        .filter(|p| p["status"] == "unhealthy")
        .collect();
    assert!(during.len() >= 3, "{t}");
    // …and so is the alert.
    let alerts = monitoring_json(&app, "/api/monitoring/alerts").await;
    assert!(
        alerts["recent"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["key"] == DATABASE_ALERT && x["state"] == "resolved")),
        "{alerts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_redis_send_one_notification_of_each() {
    if !crate::support::pg::available("two_instances_with_redis_send_one_notification").await
        || !crate::support::redis::available("two_instances_with_redis_send_one_notification").await
    {
        return;
    }
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(Arc::clone(&receiver)).await;
    let prefix = format!("outage-{}", uuid::Uuid::new_v4().simple());
    let redis = crate::support::redis::url();
    let (h, p, r) = (hook.clone(), prefix.clone(), redis.clone());
    let a = monitored()
        .backend(Backend::Postgres)
        .through_proxy()
        .config(move |c| {
            outage_settings(c, h);
            c.instance_id = Some("instance-a".into());
            c.redis.url = Some(r.into());
            c.redis.prefix = p;
        })
        .spawn()
        .await;
    let url = a.state.config.database.url.clone();
    let b = monitored()
        .config(move |c| {
            outage_settings(c, hook);
            c.database.url = url;
            c.instance_id = Some("instance-b".into());
            c.redis.url = Some(redis.into());
            c.redis.prefix = prefix;
        })
        .spawn()
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.count("firing", DATABASE_ALERT),
        0,
        "fine before the cut"
    );
    let proxy = a.proxy.as_ref().expect("proxy");
    proxy.set(Mode::Refuse);
    let fired = wait_for(&receiver, "firing", Duration::from_secs(15)).await;
    assert!(fired.is_some(), "the database alert fired");
    // both instances see the outage for a while
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.set(Mode::Pass);
    let resolved = wait_for(&receiver, "resolved", Duration::from_secs(20)).await;
    assert!(resolved.is_some(), "the resolution arrived");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.count("firing", DATABASE_ALERT), 1, "one firing");
    assert_eq!(
        receiver.count("resolved", DATABASE_ALERT),
        1,
        "one resolution"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_writes_what_monitoring_holds_and_gives_up_the_alert_lease() {
    let a = monitored()
        .config(|c| {
            c.monitoring.flush_ms = 60_000;
            c.instance_id = Some("instance-a".into());
        })
        .spawn()
        .await;
    for _ in 0..10 {
        a.get("/livez").await;
    }
    let dir = a.data_dir.path().to_path_buf();
    let mut a = a;
    a.stop().await;
    let b = monitored()
        .config(move |c| {
            c.data_dir = dir;
            c.monitoring.flush_ms = 60_000;
            c.monitoring.alert_eval_ms = 60_000;
            c.instance_id = Some("instance-b".into());
        })
        .spawn()
        .await;
    assert_eq!(
        b.count("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM metric_rollups WHERE instance = 'instance-a' AND route = 'GET /livez'")
            .await,
        10,
        "the stopped instance's last requests are in the history"
    );
    assert_eq!(
        b.count("SELECT COUNT(*) FROM leases WHERE holder = 'instance-a'")
            .await,
        0,
        "the alert lease was given up at shutdown"
    );
}

#[tokio::test]
async fn a_notification_claim_silences_only_the_same_status_within_its_window() {
    if !crate::support::redis::available("a_notification_claim_silences_only").await {
        return;
    }
    let config = huntaze::Config::default();
    let redis = huntaze::RedisSettings {
        url: Some(crate::support::redis::url().into()),
        prefix: format!("claim-{}", uuid::Uuid::new_v4().simple()),
        ..Default::default()
    };
    let lifetimes = huntaze::SharedLifetimes {
        session: Duration::from_millis(config.database.query_cache_ttl_ms),
        landing: Duration::from_millis(config.landing.refresh_ms),
    };
    let tier = huntaze::RedisTier::from_config(&redis, lifetimes, "i")
        .expect("tier")
        .expect("configured");
    let window = Duration::from_secs(10);
    let claim = |status: &'static str, at: i64| {
        let tier = Arc::clone(&tier);
        async move {
            tier.claim_notification("component_unhealthy:database", status, at, window)
                .await
                .expect("redis answers")
        }
    };
    assert!(claim("firing", 1_000_000).await, "the first firing");
    assert!(
        !claim("firing", 1_002_000).await,
        "another instance's, 2 s later"
    );
    assert!(claim("resolved", 1_004_000).await, "the resolution");
    assert!(!claim("resolved", 1_005_000).await);
    // a new episode whose resolution was never claimed (Redis was down
    // then) is not silenced for long
    assert!(claim("firing", 1_030_000).await, "the next episode");
    assert!(claim("firing", 1_041_000).await, "past the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_leaves_its_url_out_of_the_logs() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    // Markers no other test logs (the suite shares one log capture).
    let hook = format!("http://127.0.0.1:{port}/hooks/hookpath-5e1f?token=hooktoken-a9c4");
    let app = monitored()
        .config(move |c| {
            c.monitoring.alert_webhook_url = Some(hook);
            c.monitoring.alert_webhook_attempts = 2;
            c.monitoring.alert_eval_ms = 100;
            c.monitoring.alert_for_ms = 0;
            c.monitoring.alert_unhealthy_samples = 1;
            c.health.interval_ms = 100;
        })
        .health_check(Arc::new(crate::monitoring_alerts::Switch(Arc::new(
            std::sync::atomic::AtomicU8::new(1),
        ))))
        .spawn()
        .await;
    let failed = eventually(Duration::from_secs(10), || async {
        !crate::support::logs::lines(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("alert webhook failed"))
        })
        .is_empty()
    })
    .await;
    assert!(failed, "the delivery failed and was logged");
    let leaks = crate::support::logs::lines(|l| {
        let l = l.to_string();
        l.contains("hookpath-5e1f") || l.contains("hooktoken-a9c4")
    });
    assert!(leaks.is_empty(), "{leaks:?}");
    drop(app);
}

crate::both_backends! {
    async fn a_flush_batch_is_added_once_however_often_it_is_retried(backend) {
        let app = monitored().backend(backend).config(|c| c.monitoring.flush_ms = 60_000).spawn().await;
        let mut agg = huntaze::Agg::default();
        for _ in 0..5 {
            agg.record(2.0, false);
        }
        let rows = vec![huntaze::RollupRow { minute: 60_000, route: "GET /batch".to_owned(), agg }];
        let db = &app.state.db;
        assert!(!db.batch_written("b1").await.expect("lookup"), "not yet");
        db.write_monitoring_batch("b1", "i", &rows, &[], 1).await.expect("first write");
        // the answer was lost: the flush looks the batch up, and a blind
        // retry of the same batch adds nothing
        assert!(db.batch_written("b1").await.expect("lookup"));
        assert!(db.write_monitoring_batch("b1", "i", &rows, &[], 2).await.is_err());
        assert_eq!(
            app.count("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM metric_rollups WHERE route = 'GET /batch'").await,
            5
        );
    }
}
