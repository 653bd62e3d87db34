//! The alert lifecycle against a webhook receiver. The receiver and the
//! switchable health check are shared with `monitoring_outage`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use huntaze::{CheckOutcome, HealthCheck};
use serde_json::Value;

use crate::monitoring::{TOKEN, app_with_token, metrics_text, sample};
use crate::support::{eventually, json};

/// A health check whose status the test sets.
pub(crate) struct Switch(pub(crate) Arc<AtomicU8>);

#[async_trait::async_trait]
impl HealthCheck for Switch {
    fn name(&self) -> &'static str {
        "external"
    }
    fn critical(&self) -> bool {
        false
    }
    async fn check(&self) -> CheckOutcome {
        match self.0.load(Ordering::SeqCst) {
            0 => CheckOutcome::healthy(),
            _ => CheckOutcome::unhealthy("switched off by the test"),
        }
    }
}

/// A webhook receiver: what it received (body, JSON, signature).
#[derive(Default)]
pub(crate) struct Receiver {
    pub(crate) received: std::sync::Mutex<Vec<(String, Value, Option<String>)>>,
    attempts: AtomicUsize,
    fail_first: AtomicUsize,
}

impl Receiver {
    /// Notifications received with this status for this alert key.
    pub(crate) fn count(&self, status: &str, key: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v, _)| v["status"] == status && v["alert"]["key"] == key)
            .count()
    }
}

pub(crate) async fn start_receiver(r: Arc<Receiver>) -> String {
    let router = Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let r = Arc::clone(&r);
            async move {
                let n = r.attempts.fetch_add(1, Ordering::SeqCst);
                if n < r.fail_first.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers
                    .get("x-huntaze-signature")
                    .map(|v| v.to_str().unwrap().to_owned());
                let v: Value = serde_json::from_str(&body).unwrap();
                r.received.lock().unwrap().push((body, v, sig));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_once_repeats_after_its_interval_resolves_once_and_its_webhook_retries() {
    let receiver = Arc::new(Receiver::default());
    receiver.fail_first.store(2, Ordering::SeqCst);
    let hook = start_receiver(Arc::clone(&receiver)).await;
    let switch = Arc::new(AtomicU8::new(1));
    let app = app_with_token()
        .config(move |c| {
            c.health.interval_ms = 100;
            c.monitoring.alert_eval_ms = 100;
            c.monitoring.alert_for_ms = 400;
            c.monitoring.alert_repeat_ms = 1_500;
            c.monitoring.alert_unhealthy_samples = 3;
            c.monitoring.alert_webhook_url = Some(hook);
            c.monitoring.alert_webhook_secret = Some("hook-secret".to_owned().into());
        })
        .health_check(Arc::new(Switch(Arc::clone(&switch))))
        .spawn()
        .await;
    let firing = |status: &'static str| {
        let receiver = Arc::clone(&receiver);
        move || {
            let receiver = Arc::clone(&receiver);
            async move {
                receiver
                    .received
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, v, _)| v["status"] == status)
                    .count()
            }
        }
    };
    let fired = eventually(Duration::from_secs(10), || {
        let f = firing("firing");
        async move { f().await >= 1 }
    })
    .await;
    assert!(fired, "the alert fired and reached the webhook");
    assert!(
        receiver.attempts.load(Ordering::SeqCst) >= 3,
        "the webhook was retried after failing"
    );
    let alerts: Value = json(
        app.client
            .get(app.url("/api/monitoring/alerts"))
            .bearer_auth(TOKEN),
    )
    .await;
    let active = alerts["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{alerts}");
    assert_eq!(active[0]["rule"], "component_unhealthy");
    assert_eq!(active[0]["state"], "firing");
    assert_eq!(active[0]["severity"], "medium");
    let m = metrics_text(&app).await;
    assert_eq!(
        sample(&m, "alerts_firing", &[("severity", "medium")]),
        Some(1.0)
    );
    assert!(
        sample(&m, "retries_total", &[("operation", "alert_webhook")]).is_some_and(|n| n >= 2.0),
        "the webhook's retries are counted"
    );

    // not again before the repeat interval…
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(firing("firing")().await, 1, "one notification per firing");
    // …then once more
    let repeated = eventually(Duration::from_secs(5), || {
        let f = firing("firing");
        async move { f().await >= 2 }
    })
    .await;
    assert!(repeated, "a long-firing alert repeats after the interval");

    switch.store(0, Ordering::SeqCst);
    let resolved = eventually(Duration::from_secs(5), || {
        let f = firing("resolved");
        async move { f().await >= 1 }
    })
    .await;
    assert!(resolved);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(firing("resolved")().await, 1, "resolved once");
    let alerts: Value = json(
        app.client
            .get(app.url("/api/monitoring/alerts"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert!(alerts["active"].as_array().unwrap().is_empty());
    assert_eq!(alerts["recent"][0]["state"], "resolved");

    for (body, v, sig) in receiver.received.lock().unwrap().iter() {
        let expected = huntaze::alert_signature(&"hook-secret".to_owned().into(), body.as_bytes());
        assert_eq!(
            sig.as_deref(),
            Some(expected.as_str()),
            "signature verifies"
        );
        assert_eq!(v["alert"]["key"], "component_unhealthy:external");
    }
}
