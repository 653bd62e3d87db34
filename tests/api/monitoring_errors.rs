//! Error groups: grouping by route, method, status, code and cause kind
//! (never values), exact counts across instances, restarts and a database
//! outage, one `new_error` notification per new fingerprint, the route's
//! access and shape, the metric and the log line.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::monitoring::{metrics_text, promtool_check, sample};
use crate::monitoring_alerts::{Receiver, start_receiver};
use crate::support::proxy::Mode;
use crate::support::{Backend, PASSWORD, TestApp, TestAppBuilder, eventually, new_client};

const TOKEN: &str = "monitoring-token";
const ROUTE: &str = "/api/test/fail";

fn monitored(instance: &'static str) -> TestAppBuilder {
    TestApp::builder().config(move |c| {
        c.monitoring.token = Some(TOKEN.to_owned().into());
        c.monitoring.flush_ms = 100;
        c.instance_id = Some(instance.into());
    })
}

/// Alerts evaluated often and fired at once, posted to `hook`.
fn alerting(c: &mut huntaze::Config, hook: String) {
    c.monitoring.alert_eval_ms = 100;
    c.monitoring.alert_for_ms = 0;
    c.monitoring.alert_webhook_url = Some(hook);
}

/// Settings that put a second server on `app`'s database.
fn same_database(app: &TestApp) -> impl FnOnce(&mut huntaze::Config) + Send + 'static {
    let dir = app.data_dir.path().to_path_buf();
    let url = app.state.config.database.url.clone();
    move |c| {
        c.data_dir = dir;
        c.database.url = url;
    }
}

/// Fails once on the probe route with `cause`; returns the request id.
async fn fail(app: &TestApp, cause: &str, detail: &str) -> String {
    let res = app
        .get(&format!("{ROUTE}?cause={cause}&detail={detail}"))
        .await;
    assert!(res.status().is_server_error(), "{cause}: {}", res.status());
    res.headers()["x-request-id"].to_str().unwrap().to_owned()
}

async fn groups(app: &TestApp, range: &str) -> Vec<Value> {
    let res = app
        .raw
        .get(app.url(&format!("/api/monitoring/errors?range={range}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("errors request");
    assert_eq!(res.status(), 200);
    res.json::<Vec<Value>>().await.expect("ErrorGroup[]")
}

/// The group of the probe route with this cause, if listed.
fn group<'a>(groups: &'a [Value], cause: &str) -> Option<&'a Value> {
    groups
        .iter()
        .find(|g| g["route"] == ROUTE && g["cause"] == cause)
}

fn count_of(groups: &[Value], cause: &str) -> u64 {
    group(groups, cause)
        .and_then(|g| g["count"].as_u64())
        .unwrap_or(0)
}

/// The stored count of the probe route's group with this cause (-1 while
/// the database does not answer: the pool's connections may still be the
/// ones a cut broke).
async fn stored_count(app: &TestApp, cause: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM error_groups \
         WHERE route = '/api/test/fail' AND cause = $1",
    )
    .bind(cause.to_owned())
    .fetch_one(app.state.db.pool())
    .await
    .unwrap_or(-1)
}

/// A pause that puts the next errors in a later millisecond than the
/// previous ones (the order of the list); never a timing assertion.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

crate::both_backends! {
    async fn errors_are_grouped_by_kind_never_by_value_with_exact_counts(backend) {
        let app = monitored("instance-a").backend(backend).spawn().await;
        // three panics with three different messages: one group
        let mut last_panic = String::new();
        for detail in ["one", "two", "three"] {
            last_panic = fail(&app, "panic", detail).await;
        }
        next_millisecond().await;
        // another cause on the same route: another group
        fail(&app, "internal", "x").await;
        fail(&app, "internal", "y").await;
        next_millisecond().await;
        assert_eq!(app.get("/api/test/panic").await.status(), 500);
        // neither a client error nor a success is an error group
        assert_eq!(app.get("/nope").await.status(), 404);
        assert_eq!(app.get("/livez").await.status(), 200);

        let list = groups(&app, "15m").await;
        assert_eq!(list.len(), 3, "{list:?}");
        // most recently seen first
        assert_eq!(list[0]["route"], "/api/test/panic");
        assert_eq!(list[1]["cause"], "internal");
        assert_eq!(list[2]["cause"], "panic");
        let g = &list[2];
        let keys: Vec<&str> = g.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec!["code", "cause", "count", "fingerprint", "firstSeen", "instances",
            "lastRequestId", "lastSeen", "method", "route", "status"];
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
        assert_eq!(g["route"], ROUTE);
        assert_eq!(g["method"], "GET");
        assert_eq!(g["status"], 500);
        assert_eq!(g["code"], "INTERNAL_ERROR");
        assert_eq!(g["count"], 3);
        assert_eq!(g["lastRequestId"], last_panic.as_str());
        assert_eq!(g["instances"], serde_json::json!(["instance-a"]));
        assert_eq!(g["fingerprint"].as_str().unwrap().len(), 16);
        for field in ["firstSeen", "lastSeen"] {
            let t = g[field].as_str().unwrap();
            assert!(t.ends_with('Z') && chrono_like(t), "{field}: {t}");
        }
        assert!(g["firstSeen"].as_str() <= g["lastSeen"].as_str());
        assert_eq!(list[1]["count"], 2);
        assert_eq!(list[0]["cause"], "panic");
        assert_eq!(list[0]["count"], 1);
        assert_ne!(list[0]["fingerprint"], g["fingerprint"]);

        // written by the flush, with the same counts
        let written = eventually(Duration::from_secs(10), || async {
            stored_count(&app, "panic").await == 3 && stored_count(&app, "internal").await == 2
        })
        .await;
        assert!(written, "the groups reached the database");
        assert_eq!(groups(&app, "7d").await, groups(&app, "15m").await, "written or not, one answer");

        // the metric, labelled by cause kind, passes promtool
        let m = metrics_text(&app).await;
        let labels = |cause| [("http_route", ROUTE), ("http_request_method", "GET"),
            ("http_response_status_code", "500"), ("cause", cause)];
        assert_eq!(sample(&m, "huntaze_errors_total", &labels("panic")), Some(3.0));
        assert_eq!(sample(&m, "huntaze_errors_total", &labels("internal")), Some(2.0));
        assert!(m.contains("# TYPE huntaze_errors_total counter"), "{m}");
        promtool_check(&m);

        // the request's log line names the group, the cause kind and the chain
        let fingerprint = g["fingerprint"].as_str().unwrap().to_owned();
        let lines = crate::support::logs::lines(|l| l["span"]["request_id"] == last_panic.as_str()
            && l["message"] == "request failed");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["fingerprint"], fingerprint.as_str());
        assert_eq!(lines[0]["cause_kind"], "panic");
        assert!(lines[0]["cause"].as_str().unwrap().contains("probe failure three"), "{}", lines[0]);
    }
}

/// `2026-12-07T01:02:03.456Z`: an RFC 3339 UTC timestamp to the millisecond.
fn chrono_like(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
}

crate::both_backends! {
    async fn instances_and_restarts_add_up_and_a_new_error_is_announced_once(backend) {
        let receiver = Arc::new(Receiver::default());
        let hook = start_receiver(Arc::clone(&receiver)).await;
        let h = hook.clone();
        let mut a = monitored("instance-a")
            .backend(backend)
            .config(move |c| alerting(c, h))
            .spawn()
            .await;
        let h = hook.clone();
        let b = monitored("instance-b")
            .config(same_database(&a))
            .config(move |c| alerting(c, h))
            .spawn()
            .await;
        for i in 0..5 {
            fail(&a, "panic", &format!("a{i}")).await;
        }
        for i in 0..4 {
            fail(&b, "panic", &format!("b{i}")).await;
        }
        let added = eventually(Duration::from_secs(10), || async {
            stored_count(&a, "panic").await == 9
        })
        .await;
        assert!(added, "both instances' errors in one group");
        let list = groups(&b, "1h").await;
        let g = group(&list, "panic").expect("the group").clone();
        assert_eq!(g["count"], 9);
        assert_eq!(g["instances"], serde_json::json!(["instance-a", "instance-b"]));
        let key = format!("new_error:{}", g["fingerprint"].as_str().unwrap());
        let announced = eventually(Duration::from_secs(10), || async {
            receiver.count("firing", &key) >= 1
        })
        .await;
        assert!(announced, "the new error was announced");

        // a restart: the groups are still there, and add up
        a.stop().await;
        let h = hook.clone();
        let again = monitored("instance-a")
            .config(same_database(&a))
            .config(move |c| alerting(c, h))
            .spawn()
            .await;
        assert_eq!(count_of(&groups(&again, "15m").await, "panic"), 9, "kept across the restart");
        for i in 0..3 {
            fail(&again, "panic", &format!("c{i}")).await;
        }
        let added = eventually(Duration::from_secs(10), || async {
            stored_count(&again, "panic").await == 12
        })
        .await;
        assert!(added, "the restarted instance's errors add up");
        assert_eq!(count_of(&groups(&b, "15m").await, "panic"), 12);
        // several evaluations by either instance pass: still one
        let evaluated = eventually(Duration::from_secs(10), || async {
            b.count("SELECT COUNT(*) FROM alerts WHERE rule = 'new_error' AND notifications = 1").await == 1
        })
        .await;
        assert!(evaluated);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(receiver.count("firing", &key), 1, "one notification, not per request, instance or restart");
        assert_eq!(receiver.count("resolved", &key), 0, "within the alert window");
        let alert = receiver
            .received
            .lock()
            .unwrap()
            .iter()
            .find(|(_, v, _)| v["alert"]["key"] == key.as_str())
            .map(|(_, v, _)| v["alert"].clone())
            .unwrap();
        assert_eq!(alert["rule"], "new_error");
        assert_eq!(alert["summary"], "new error: GET /api/test/fail answered 500 INTERNAL_ERROR (cause panic)");
        drop(again);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_groups_are_kept_in_memory_and_written_after() {
    if !crate::support::pg::available("during_an_outage_groups_are_kept_in_memory").await {
        return;
    }
    let receiver = Arc::new(Receiver::default());
    let hook = start_receiver(Arc::clone(&receiver)).await;
    let app = monitored("instance-a")
        .backend(Backend::Postgres)
        .through_proxy()
        .config(move |c| {
            alerting(c, hook);
            c.database.acquire_timeout_ms = 500;
        })
        .spawn()
        .await;
    fail(&app, "panic", "before").await;
    fail(&app, "panic", "before").await;
    let written = eventually(Duration::from_secs(10), || async {
        stored_count(&app, "panic").await == 2
    })
    .await;
    assert!(written);
    let panic = format!(
        "new_error:{}",
        group(&groups(&app, "15m").await, "panic").unwrap()["fingerprint"]
            .as_str()
            .unwrap()
    );
    // announced before the cut (an evaluation cut short mid-way may lose
    // a notification it had decided: the lifecycle is not transactional)
    let announced = eventually(Duration::from_secs(10), || async {
        receiver.count("firing", &panic) >= 1
    })
    .await;
    assert!(announced, "the new group was announced");
    let proxy = app.proxy.as_ref().expect("proxy");
    proxy.set(Mode::Refuse);
    for i in 0..3 {
        fail(&app, "panic", &format!("during{i}")).await;
    }
    for i in 0..2 {
        fail(&app, "upstream", &format!("during{i}")).await;
    }
    // a request that needs the database: its kind comes from the store's
    // classification of the real driver error
    assert_eq!(app.get("/api/test/db").await.status(), 503);
    // the flush sees the cut
    assert!(app.state.monitor.flush().await.is_err());
    // answered from memory: this instance's unwritten errors
    let list = groups(&app, "15m").await;
    assert_eq!(count_of(&list, "panic"), 3, "{list:?}");
    assert_eq!(count_of(&list, "upstream"), 2, "{list:?}");
    assert_eq!(group(&list, "upstream").unwrap()["status"], 502);
    assert_eq!(group(&list, "upstream").unwrap()["code"], "BAD_GATEWAY");
    let db = list
        .iter()
        .find(|g| g["route"] == "/api/test/db")
        .expect("the database group");
    eprintln!("database group during the cut: {db}");
    assert_eq!(
        (db["status"].as_u64(), db["code"].as_str()),
        (Some(503), Some("SERVICE_UNAVAILABLE"))
    );
    assert_eq!(db["cause"], "database_unavailable");

    proxy.set(Mode::Pass);
    let written = eventually(Duration::from_secs(20), || async {
        stored_count(&app, "panic").await == 5 && stored_count(&app, "upstream").await == 2
    })
    .await;
    assert!(written, "the buffered errors were written, each once");
    let list = groups(&app, "15m").await;
    assert_eq!(count_of(&list, "panic"), 5);
    // the group first seen during the outage is new once written
    let upstream = format!(
        "new_error:{}",
        group(&list, "upstream").unwrap()["fingerprint"]
            .as_str()
            .unwrap()
    );
    let announced = eventually(Duration::from_secs(15), || async {
        receiver.count("firing", &upstream) >= 1
    })
    .await;
    assert!(announced, "raised when the buffered group was written");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.count("firing", &upstream), 1);
    assert_eq!(
        receiver.count("firing", &panic),
        1,
        "the older group is not new again"
    );
}

#[tokio::test]
async fn the_errors_route_checks_its_range_and_its_callers() {
    let app = monitored("instance-a").spawn().await;
    let res = app
        .raw
        .get(app.url("/api/monitoring/errors?range=2d"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"][0]["field"], "range");
    assert_eq!(app.get("/api/monitoring/errors").await.status(), 401);
    app.sign_up("creator@example.com").await;
    assert_eq!(app.get("/api/monitoring/errors").await.status(), 403);
    let admin = new_client();
    app.register_with(&admin, "ops@example.com", PASSWORD).await;
    app.promote("ops@example.com").await;
    let res = admin
        .get(app.url("/api/monitoring/errors?range=24h"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), serde_json::json!([]));
    let doc: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let op = &doc["paths"]["/api/monitoring/errors"]["get"];
    assert_eq!(op["tags"][0], "monitoring");
    assert_eq!(
        op["security"],
        serde_json::json!([{ "monitoring_token": [] }, { "session_cookie": [] }])
    );
    assert!(
        doc["components"]["schemas"]["ErrorGroup"]["properties"]["lastRequestId"].is_object(),
        "{op}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_grouped_and_shed_requests_are_not() {
    let app = monitored("instance-a")
        .config(|c| {
            c.server.max_in_flight = 1;
            c.server.request_timeout_ms = 2_000;
        })
        .spawn()
        .await;
    let c = app.client.clone();
    let url = app.url("/api/test/sleep?ms=3000");
    let slow = tokio::spawn(async move { c.get(url).send().await.unwrap().status() });
    // the slow request holds the one slot before the others come
    let holding = eventually(Duration::from_secs(5), || async {
        app.state.metrics.in_flight() == 1
    })
    .await;
    assert!(holding);
    let shed = eventually(Duration::from_secs(5), || async {
        app.get("/api/test/sleep?ms=1").await.status() == 503
    })
    .await;
    assert!(shed, "a request was shed while the slot was held");
    assert_eq!(slow.await.unwrap(), 504);
    let list = groups(&app, "15m").await;
    assert_eq!(
        list.len(),
        1,
        "the deadline only, not the shed 503: {list:?}"
    );
    assert_eq!(list[0]["route"], "/api/test/sleep");
    assert_eq!(list[0]["status"], 504);
    assert_eq!(list[0]["code"], "GATEWAY_TIMEOUT");
    assert_eq!(list[0]["cause"], "deadline");
    assert_eq!(list[0]["count"], 1);
    let m = metrics_text(&app).await;
    assert!(sample(&m, "http_server_requests_shed_total", &[]).is_some_and(|n| n >= 1.0));
    assert_eq!(
        sample(
            &m,
            "huntaze_errors_total",
            &[("http_response_status_code", "503")]
        ),
        None
    );
}

crate::both_backends! {
    async fn a_rejected_error_group_write_holds_back_nothing_else(backend) {
        let app = monitored("instance-a")
            .backend(backend)
            .config(|c| c.monitoring.flush_ms = 60_000)
            .spawn()
            .await;
        let db = app.state.db.pool();
        // a schema the writer does not expect: the database rejects the write
        sqlx::query("ALTER TABLE error_groups RENAME COLUMN cause TO cause_kind")
            .execute(db)
            .await
            .expect("rename");
        fail(&app, "internal", "x").await;
        fail(&app, "internal", "y").await;
        assert_eq!(app.get("/livez").await.status(), 200);
        app.state.monitor.flush().await.expect("the flush carries on");
        assert_eq!(
            app.count("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM metric_rollups WHERE route = 'GET /livez'")
                .await,
            1,
            "the rollups were written all the same"
        );
        sqlx::query("ALTER TABLE error_groups RENAME COLUMN cause_kind TO cause")
            .execute(db)
            .await
            .expect("rename back");
        fail(&app, "internal", "z").await;
        app.state.monitor.flush().await.expect("flush");
        assert_eq!(stored_count(&app, "internal").await, 3, "kept, then written once");
    }
}
