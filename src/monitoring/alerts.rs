//! Alerting: rules over the shared history, a pending → firing → resolved
//! lifecycle stored in the database (or, while the database is unreachable,
//! in this instance's memory: [`LocalAlerts`]), and notifications (always
//! the log; a signed webhook when configured) sent by a background worker,
//! never on a request path.
//!
//! Rules (thresholds from configuration):
//! - `route_5xx` (high): a critical route's 5xx rate over the window;
//! - `route_latency` (medium): a route's p95 over the window;
//! - `component_unhealthy` (high for database/config, else medium): the last
//!   N samples of a component all unhealthy;
//! - `component_degraded` (low): not healthy for the whole degraded window;
//! - `circuit_open` (medium): a dependency's circuit breaker is open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use super::rollup::Agg;
use crate::config::MonitoringSettings;
use crate::store::Db;
use crate::store::monitoring::AlertRow;
use crate::time_fmt::{now_ms, rfc3339_from_ms};

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub rule: &'static str,
    pub key: String,
    pub severity: &'static str,
    pub summary: String,
}

#[derive(Clone, Debug)]
pub struct Thresholds {
    pub window_ms: i64,
    pub min_requests: u64,
    pub error_rate: f64,
    pub p95_ms: f64,
    pub unhealthy_samples: usize,
    pub degraded_ms: i64,
    pub for_ms: i64,
    pub repeat_ms: i64,
}

impl Thresholds {
    pub fn from_config(c: &MonitoringSettings) -> Self {
        Self {
            window_ms: c.alert_window_ms as i64,
            min_requests: c.alert_min_requests,
            error_rate: c.alert_error_rate_percent / 100.0,
            p95_ms: c.alert_p95_ms,
            unhealthy_samples: c.alert_unhealthy_samples.max(1),
            degraded_ms: c.alert_degraded_ms as i64,
            for_ms: c.alert_for_ms as i64,
            repeat_ms: c.alert_repeat_ms as i64,
        }
    }
}

/// Routes whose failures page someone: the landing page, sign-in and
/// registration, the TikTok callback, health.
pub fn is_critical_route(route_key: &str) -> bool {
    let path = route_key.split_once(' ').map_or(route_key, |(_, p)| p);
    path == "/"
        || path.starts_with("/api/auth/")
        || path.starts_with("/api/health")
        || path == "/readyz"
}

/// Evaluates every rule over the history; returns the conditions that hold now.
pub fn evaluate(
    t: &Thresholds,
    rollups: &[(i64, String, Agg)],
    health: &[(i64, String, String, String, i64)],
    circuit_open: &[&str],
    now: i64,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let mut per_route: HashMap<&str, Agg> = HashMap::new();
    for (minute, route, agg) in rollups {
        if *minute >= now - t.window_ms {
            per_route.entry(route.as_str()).or_default().merge(agg);
        }
    }
    let mut routes: Vec<_> = per_route.into_iter().collect();
    routes.sort_by(|a, b| a.0.cmp(b.0));
    for (route, agg) in routes {
        if agg.requests < t.min_requests {
            continue;
        }
        let rate = agg.errors as f64 / agg.requests as f64;
        if is_critical_route(route) && rate >= t.error_rate {
            out.push(Condition {
                rule: "route_5xx",
                key: format!("route_5xx:{route}"),
                severity: "high",
                summary: format!(
                    "{route}: {:.1}% of {} requests failed with 5xx",
                    rate * 100.0,
                    agg.requests
                ),
            });
        }
        if let Some(p95) = agg.quantile(0.95)
            && p95 > t.p95_ms
        {
            out.push(Condition {
                rule: "route_latency",
                key: format!("route_latency:{route}"),
                severity: "medium",
                summary: format!("{route}: p95 {p95:.0} ms over {} ms", t.p95_ms),
            });
        }
    }
    let mut by_component: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    for (at, _instance, component, status, _) in health {
        by_component
            .entry(component.as_str())
            .or_default()
            .push((*at, status.as_str()));
    }
    let mut components: Vec<_> = by_component.into_iter().collect();
    components.sort_by(|a, b| a.0.cmp(b.0));
    for (component, mut samples) in components {
        samples.sort_by_key(|s| s.0);
        let last: Vec<_> = samples.iter().rev().take(t.unhealthy_samples).collect();
        if last.len() == t.unhealthy_samples && last.iter().all(|(_, s)| *s == "unhealthy") {
            let critical = matches!(component, "database" | "config");
            out.push(Condition {
                rule: "component_unhealthy",
                key: format!("component_unhealthy:{component}"),
                severity: if critical { "high" } else { "medium" },
                summary: format!(
                    "{component} unhealthy for {} consecutive samples",
                    t.unhealthy_samples
                ),
            });
            continue;
        }
        let window: Vec<_> = samples
            .iter()
            .filter(|(at, _)| *at >= now - t.degraded_ms)
            .collect();
        let covered = samples
            .first()
            .is_some_and(|(at, _)| *at <= now - t.degraded_ms);
        if covered && !window.is_empty() && window.iter().all(|(_, s)| *s != "healthy") {
            out.push(Condition {
                rule: "component_degraded",
                key: format!("component_degraded:{component}"),
                severity: "low",
                summary: format!(
                    "{component} not healthy for {} minutes",
                    t.degraded_ms / 60_000
                ),
            });
        }
    }
    for name in circuit_open {
        out.push(Condition {
            rule: "circuit_open",
            key: format!("circuit_open:{name}"),
            severity: "medium",
            summary: format!("the {name} circuit breaker is open"),
        });
    }
    out
}

/// Where the alert lifecycle is kept: the database normally, this
/// instance's memory while the database is unreachable.
#[async_trait::async_trait]
pub trait AlertBook: Send + Sync {
    async fn open_alerts(&self) -> Result<Vec<AlertRow>, sqlx::Error>;
    async fn insert_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error>;
    async fn update_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error>;
}

#[async_trait::async_trait]
impl AlertBook for Db {
    async fn open_alerts(&self) -> Result<Vec<AlertRow>, sqlx::Error> {
        Db::open_alerts(self).await
    }
    async fn insert_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        Db::insert_alert(self, a).await
    }
    async fn update_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        Db::update_alert(self, a).await
    }
}

/// Alerts this instance raised on its own while the database was
/// unreachable; handed to the database when it returns. Finished ones are
/// kept (bounded) so that the history shows them afterwards.
#[derive(Default)]
pub struct LocalAlerts {
    rows: std::sync::Mutex<Vec<AlertRow>>,
}

/// Finished local alerts kept for the history beyond this are dropped.
const MAX_LOCAL_ALERTS: usize = 1_000;

impl LocalAlerts {
    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<AlertRow>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every alert, to hand over to the database.
    pub fn all(&self) -> Vec<AlertRow> {
        self.rows().clone()
    }

    /// Forgets one the database has taken.
    pub fn remove(&self, id: &str) {
        self.rows().retain(|r| r.id != id);
    }

    /// Pending and firing ones.
    pub fn open(&self) -> Vec<AlertRow> {
        self.rows()
            .iter()
            .filter(|a| matches!(a.state.as_str(), "pending" | "firing"))
            .cloned()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.rows().is_empty()
    }
}

#[async_trait::async_trait]
impl AlertBook for LocalAlerts {
    async fn open_alerts(&self) -> Result<Vec<AlertRow>, sqlx::Error> {
        Ok(self.open())
    }
    async fn insert_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        self.rows().push(a.clone());
        Ok(())
    }
    async fn update_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        let mut rows = self.rows();
        if let Some(row) = rows.iter_mut().find(|r| r.id == a.id) {
            *row = a.clone();
        }
        // Cancelled ones never fired: nothing to keep.
        rows.retain(|r| r.state != "cancelled");
        let finished = rows.iter().filter(|r| r.state == "resolved").count();
        if finished > MAX_LOCAL_ALERTS {
            let mut drop = finished - MAX_LOCAL_ALERTS;
            rows.retain(|r| {
                let old = r.state == "resolved" && drop > 0;
                drop -= usize::from(old);
                !old
            });
        }
        Ok(())
    }
}

/// A notification about one alert.
#[derive(Clone, Debug)]
pub struct Notification {
    pub status: &'static str,
    pub alert: AlertRow,
}

/// Moves every alert one step given the conditions that hold now; returns
/// the notifications to send.
pub async fn advance(
    db: &dyn AlertBook,
    t: &Thresholds,
    holding: &[Condition],
    now: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    let mut notes = Vec::new();
    let open = db.open_alerts().await?;
    let mut open_by_key: HashMap<String, AlertRow> =
        open.into_iter().map(|a| (a.alert_key.clone(), a)).collect();
    for c in holding {
        match open_by_key.remove(&c.key) {
            None => {
                let a = AlertRow {
                    id: uuid::Uuid::now_v7().simple().to_string(),
                    rule: c.rule.into(),
                    alert_key: c.key.clone(),
                    severity: c.severity.into(),
                    state: "pending".into(),
                    summary: c.summary.clone(),
                    started_at: now,
                    fired_at: None,
                    resolved_at: None,
                    last_notified_at: None,
                    notifications: 0,
                };
                db.insert_alert(&a).await?;
                if t.for_ms == 0 {
                    fire(db, a, now, &mut notes).await?;
                }
            }
            Some(mut a) => {
                a.summary = c.summary.clone();
                if a.state == "pending" && now - a.started_at >= t.for_ms {
                    fire(db, a, now, &mut notes).await?;
                } else if a.state == "firing"
                    && a.last_notified_at.is_some_and(|l| now - l >= t.repeat_ms)
                {
                    a.last_notified_at = Some(now);
                    a.notifications += 1;
                    db.update_alert(&a).await?;
                    notes.push(Notification {
                        status: "firing",
                        alert: a,
                    });
                } else {
                    db.update_alert(&a).await?;
                }
            }
        }
    }
    // Whatever is still open no longer holds.
    for (_, mut a) in open_by_key {
        if a.state == "firing" {
            a.state = "resolved".into();
            a.resolved_at = Some(now);
            a.last_notified_at = Some(now);
            a.notifications += 1;
            db.update_alert(&a).await?;
            notes.push(Notification {
                status: "resolved",
                alert: a,
            });
        } else {
            a.state = "cancelled".into();
            a.resolved_at = Some(now);
            db.update_alert(&a).await?;
        }
    }
    Ok(notes)
}

async fn fire(
    db: &dyn AlertBook,
    mut a: AlertRow,
    now: i64,
    notes: &mut Vec<Notification>,
) -> Result<(), sqlx::Error> {
    a.state = "firing".into();
    a.fired_at = Some(now);
    a.last_notified_at = Some(now);
    a.notifications += 1;
    db.update_alert(&a).await?;
    notes.push(Notification {
        status: "firing",
        alert: a,
    });
    Ok(())
}

/// The JSON body of a webhook post (and of the log line).
pub fn payload(n: &Notification, instance: &str) -> serde_json::Value {
    let a = &n.alert;
    json!({
        "status": n.status,
        "alert": {
            "id": a.id, "rule": a.rule, "key": a.alert_key, "severity": a.severity,
            "summary": a.summary,
            "startedAt": rfc3339_from_ms(a.started_at),
            "firedAt": a.fired_at.map(rfc3339_from_ms),
            "resolvedAt": a.resolved_at.map(rfc3339_from_ms),
        },
        "instance": instance,
        "sentAt": rfc3339_from_ms(now_ms()),
    })
}

pub fn signature(secret: &SecretString, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends notifications: to the log at once, to the webhook from a queue
/// with retries and backoff.
#[derive(Clone)]
pub struct Notifier {
    queue: Option<mpsc::Sender<Notification>>,
    instance: String,
    /// Notifications queued or being delivered, so that a shutdown can
    /// wait for them: an exit must not swallow the last resolution.
    undelivered: Arc<std::sync::atomic::AtomicUsize>,
}

impl Notifier {
    /// `retries` counts the webhook's retries beside the server's others
    /// (`retries_total{operation="alert_webhook"}`).
    pub fn new(
        config: &MonitoringSettings,
        instance: String,
        retries: Arc<crate::retry::RetryCounts>,
    ) -> anyhow::Result<Self> {
        let Some(url) = config.alert_webhook_url.clone() else {
            return Ok(Self {
                undelivered: Default::default(),
                queue: None,
                instance,
            });
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.alert_webhook_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let secret = config.alert_webhook_secret.clone();
        let attempts = config.alert_webhook_attempts.max(1);
        let (tx, mut rx) = mpsc::channel::<Notification>(1024);
        let undelivered: Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let in_worker = Arc::clone(&undelivered);
        let who = instance.clone();
        tokio::spawn(async move {
            let policy = crate::retry::Retry {
                policy: crate::retry::RetryPolicy {
                    attempts,
                    base: Duration::from_millis(200),
                    cap: Duration::from_secs(10),
                    deadline: Duration::from_secs(60),
                },
                counts: retries,
            };
            while let Some(n) = rx.recv().await {
                let body = payload(&n, &who).to_string();
                let result = policy
                    .run_when(
                        "alert_webhook",
                        |_e: &anyhow::Error| true,
                        || {
                            let mut req = http
                                .post(&url)
                                .header("content-type", "application/json")
                                .body(body.clone());
                            if let Some(s) = &secret {
                                req = req
                                    .header("x-huntaze-signature", signature(s, body.as_bytes()));
                            }
                            async move {
                                // The URL may carry a token: never in a log line.
                                let res = req.send().await.map_err(|e| e.without_url())?;
                                anyhow::ensure!(
                                    res.status().is_success(),
                                    "webhook answered {}",
                                    res.status()
                                );
                                Ok(())
                            }
                        },
                    )
                    .await;
                if let Err(e) = result {
                    tracing::error!(alert = %n.alert.alert_key, error = %e, "alert webhook failed after retries");
                }
                in_worker.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        });
        Ok(Self {
            undelivered,
            queue: Some(tx),
            instance,
        })
    }

    pub fn send(&self, n: Notification) {
        let body = payload(&n, &self.instance);
        match n.alert.severity.as_str() {
            "high" => tracing::error!(alert = %body, "alert {}", n.status),
            _ => tracing::warn!(alert = %body, "alert {}", n.status),
        }
        if let Some(q) = &self.queue {
            self.undelivered
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            if q.try_send(n).is_err() {
                self.undelivered
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                tracing::error!(
                    "alert webhook queue full; notification dropped (it is in the log)"
                );
            }
        }
    }

    /// Waits until every queued notification was delivered (or given up
    /// on), or `limit` passes; false in the latter case.
    pub async fn drain(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.undelivered.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            window_ms: 300_000,
            min_requests: 10,
            error_rate: 0.05,
            p95_ms: 1000.0,
            unhealthy_samples: 3,
            degraded_ms: 600_000,
            for_ms: 0,
            repeat_ms: 1000,
        }
    }

    fn agg(ok: u64, err: u64, ms: f64) -> Agg {
        let mut a = Agg::default();
        for _ in 0..ok {
            a.record(ms, false);
        }
        for _ in 0..err {
            a.record(ms, true);
        }
        a
    }

    #[test]
    fn a_critical_routes_5xx_rate_fires_but_not_below_the_traffic_floor() {
        let now = 600_000;
        let r = vec![(540_000, "POST /api/auth/login".to_owned(), agg(90, 10, 5.0))];
        let c = evaluate(&t(), &r, &[], &[], now);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].rule, c[0].severity), ("route_5xx", "high"));
        let r = vec![(540_000, "POST /api/auth/login".to_owned(), agg(5, 4, 5.0))];
        assert!(evaluate(&t(), &r, &[], &[], now).is_empty());
        let r = vec![(540_000, "GET /platforms".to_owned(), agg(50, 50, 5.0))];
        assert!(
            evaluate(&t(), &r, &[], &[], now).is_empty(),
            "not a critical route"
        );
    }

    #[test]
    fn slow_routes_and_unhealthy_components_and_open_circuits_fire() {
        let now = 600_000;
        let r = vec![(540_000, "GET /platforms".to_owned(), agg(20, 0, 2000.0))];
        let h: Vec<_> = (0..3)
            .map(|i| {
                (
                    590_000 + i,
                    "i".to_owned(),
                    "database".to_owned(),
                    "unhealthy".to_owned(),
                    1,
                )
            })
            .collect();
        let c = evaluate(&t(), &r, &h, &["tiktok"], now);
        let rules: Vec<_> = c.iter().map(|c| c.rule).collect();
        assert_eq!(
            rules,
            vec!["route_latency", "component_unhealthy", "circuit_open"]
        );
        assert_eq!(c[1].severity, "high");
    }

    #[test]
    fn a_long_degradation_fires_low() {
        let now = 1_000_000;
        let h: Vec<_> = (0..12)
            .map(|i| {
                (
                    now - 660_000 + i * 60_000,
                    "i".to_owned(),
                    "external".to_owned(),
                    "degraded".to_owned(),
                    1,
                )
            })
            .collect();
        let c = evaluate(&t(), &[], &h, &[], now);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].rule, c[0].severity), ("component_degraded", "low"));
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        let s = signature(&SecretString::from("k"), b"body");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
    }
}
