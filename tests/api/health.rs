//! Health: background sampling, per-check timeouts, aggregation, status
//! codes, anonymous vs detailed views, probes.

use std::sync::Arc;
use std::time::Duration;

use huntaze::{CheckOutcome, HealthCheck, HealthStatus as Status};
use serde_json::Value;

use crate::support::{TestApp, eventually, json};

/// A stand-in component with a fixed outcome, optionally slow.
struct StandIn {
    name: &'static str,
    critical: bool,
    status: Status,
    delay: Duration,
}

#[async_trait::async_trait]
impl HealthCheck for StandIn {
    fn name(&self) -> &'static str {
        self.name
    }
    fn critical(&self) -> bool {
        self.critical
    }
    async fn check(&self) -> CheckOutcome {
        tokio::time::sleep(self.delay).await;
        CheckOutcome {
            status: self.status,
            message: Some(format!("stand-in {}", self.status.as_str())),
            details: Some(serde_json::json!({ "secretish": "internal detail" })),
        }
    }
}

fn stand_in(name: &'static str, critical: bool, status: Status) -> Arc<dyn HealthCheck> {
    Arc::new(StandIn {
        name,
        critical,
        status,
        delay: Duration::ZERO,
    })
}

async fn overall(app: &TestApp) -> (u16, Value) {
    let res = app.get("/api/health").await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    (res.status().as_u16(), res.json().await.unwrap())
}

crate::both_backends! {
async fn all_components_healthy_gives_200_healthy_with_the_contract_shape(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let (status, body) = overall(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"].is_string());
    assert!(body["responseTime"].is_u64());
    let names: Vec<_> = body["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    for expected in ["database", "config", "auth", "external"] {
        assert!(names.contains(&expected.to_owned()), "{names:?}");
    }
    for c in body["components"].as_array().unwrap() {
        assert!(c["responseTime"].is_u64());
        assert!(
            c.get("details").is_none(),
            "anonymous callers see statuses only"
        );
        assert!(c.get("message").is_none());
    }
}
}

#[tokio::test]
async fn a_degraded_component_makes_the_whole_degraded_but_still_200() {
    let app = TestApp::builder()
        .health_check(stand_in("auth", false, Status::Degraded))
        .spawn()
        .await;
    let (status, body) = overall(&app).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")));
    let res = app.get("/api/health/auth").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "degraded");
}

#[tokio::test]
async fn a_non_critical_unhealthy_component_degrades_but_a_critical_one_makes_503() {
    let app = TestApp::builder()
        .health_check(stand_in("external", false, Status::Unhealthy))
        .spawn()
        .await;
    let (status, body) = overall(&app).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")));
    assert_eq!(app.get("/api/health/external").await.status(), 503);

    let app = TestApp::builder()
        .health_check(stand_in("database", true, Status::Unhealthy))
        .spawn()
        .await;
    let (status, body) = overall(&app).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("unhealthy")));
    let res = app.get("/api/health/database").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "database");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(
        app.get("/readyz").await.status(),
        503,
        "not ready without a database"
    );
}

#[tokio::test]
async fn a_hung_check_is_unhealthy_with_a_timeout_message_and_never_hangs_the_endpoint() {
    let app = TestApp::builder()
        .config(|c| {
            c.health.check_timeout_ms = 300;
            c.monitoring.token = Some("probe-token".to_owned().into());
        })
        .health_check(Arc::new(StandIn {
            name: "config",
            critical: true,
            status: Status::Healthy,
            delay: Duration::from_secs(3600),
        }))
        .spawn()
        .await;
    let started = std::time::Instant::now();
    let res = app
        .client
        .get(app.url("/api/health/config"))
        .bearer_auth("probe-token")
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the endpoint reads the last sample"
    );
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["message"], "timed out after 300 ms");
    let (status, _) = overall(&app).await;
    assert_eq!(status, 503);
}

crate::both_backends! {
async fn details_need_the_monitoring_token(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .config(|c| c.monitoring.token = Some("s3cret-token".to_owned().into()))
        .spawn()
        .await;
    let anon: Value = app.get("/api/health/database").await.json().await.unwrap();
    assert!(anon.get("details").is_none());

    let wrong: Value = json(
        app.client
            .get(app.url("/api/health/database"))
            .bearer_auth("wrong"),
    )
    .await;
    assert!(wrong.get("details").is_none());

    let detailed: Value = json(
        app.client
            .get(app.url("/api/health/database"))
            .bearer_auth("s3cret-token"),
    )
    .await;
    let d = &detailed["details"];
    let expected = match backend {
        crate::support::Backend::Sqlite => "sqlite",
        crate::support::Backend::Postgres => "postgres",
    };
    assert_eq!(d["backend"], expected);
    assert!(d["roundTripMs"].is_number());
    assert!(d["pool"]["size"].is_u64() && d["pool"]["idle"].is_u64());
    assert!(d["pool"]["inUse"].is_u64() && d["pool"]["waiting"].is_u64());
    assert_eq!(d["migration"]["current"], true);

    let config: Value = json(
        app.client
            .get(app.url("/api/health/config"))
            .bearer_auth("s3cret-token"),
    )
    .await;
    assert_eq!(config["details"]["tiktok"], "sandbox");
    assert!(
        !config.to_string().contains("s3cret-token"),
        "values never appear"
    );
}
}

#[tokio::test]
async fn unknown_component_is_404() {
    let app = TestApp::spawn().await;
    let res = app.get("/api/health/kitchen").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn checks_run_in_the_background_not_per_request() {
    struct Counting(Arc<std::sync::atomic::AtomicUsize>);
    #[async_trait::async_trait]
    impl HealthCheck for Counting {
        fn name(&self) -> &'static str {
            "external"
        }
        fn critical(&self) -> bool {
            false
        }
        async fn check(&self) -> CheckOutcome {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            CheckOutcome::healthy()
        }
    }
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = TestApp::builder()
        .config(|c| c.health.interval_ms = 60_000)
        .health_check(Arc::new(Counting(calls.clone())))
        .spawn()
        .await;
    for _ in 0..50 {
        app.get("/api/health").await;
        app.get("/api/health/external").await;
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one sample at start only"
    );
}

#[tokio::test]
async fn livez_and_readyz_answer_when_ready() {
    let app = TestApp::spawn().await;
    let res = app.get("/livez").await;
    assert_eq!(res.status(), 200);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

crate::both_backends! {
async fn a_slow_database_round_trip_is_degraded_not_unhealthy(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .config(|c| {
            c.health.db_slow_ms = 0;
            c.monitoring.token = Some("t".to_owned().into());
        })
        .spawn()
        .await;
    let res = app.client.get(app.url("/api/health/database")).bearer_auth("t").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("slow round trip"));
    assert_eq!(app.get("/readyz").await.status(), 200, "degraded is still ready");
}

async fn a_saturated_pool_is_degraded(backend) {
    let app = TestApp::builder()
        .backend(backend)
        .config(|c| {
            c.database.max_connections = 1;
            c.database.acquire_timeout_ms = 300;
            c.health.interval_ms = 100;
            c.monitoring.token = Some("t".to_owned().into());
        })
        .spawn()
        .await;
    let held = app.state.db.pool().acquire().await.unwrap();
    let saturated = eventually(Duration::from_secs(5), || async {
        let body: Value = json(
            app.client
                .get(app.url("/api/health/database"))
                .bearer_auth("t"),
        )
        .await;
        body["status"] == "degraded" && body["message"] == "connection pool saturated"
    })
    .await;
    assert!(saturated);
    drop(held);
    let healthy = eventually(Duration::from_secs(5), || async {
        let body: Value = app.get("/api/health/database").await.json().await.unwrap();
        body["status"] == "healthy"
    })
    .await;
    assert!(healthy);
}
}

#[tokio::test]
async fn the_auth_check_reports_weak_keys_and_an_unreachable_session_store() {
    let app = TestApp::builder()
        .config(|c| {
            // 32 bytes, but "password" four times
            c.keys.secret_key = Some(
                "cGFzc3dvcmRwYXNzd29yZHBhc3N3b3JkcGFzc3dvcmQ="
                    .to_owned()
                    .into(),
            );
            c.monitoring.token = Some("t".to_owned().into());
        })
        .spawn()
        .await;
    let auth = || async {
        let res = app
            .client
            .get(app.url("/api/health/auth"))
            .bearer_auth("t")
            .send()
            .await
            .unwrap();
        res.json::<Value>().await.unwrap()
    };
    let body = auth().await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(
        body["message"], "signing or encryption key is weak",
        "{body}"
    );
    assert_eq!(body["details"]["keysStrong"], false, "{body}");
    assert_eq!(body["details"]["keysPresent"], true, "{body}");
    assert_eq!(body["details"]["signVerify"], true, "{body}");

    app.state.db.pool().close().await;
    let unreachable = eventually(Duration::from_secs(5), || async {
        let body = auth().await;
        body["status"] == "unhealthy"
            && body["message"] == "session store unavailable"
            && body["details"]["sessionStore"] == false
    })
    .await;
    assert!(
        unreachable,
        "the session store probe fails: {}",
        auth().await
    );
}
