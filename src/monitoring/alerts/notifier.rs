//! Alert notifications: always the log; a signed webhook when configured,
//! posted by a background worker, never on a request path.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use super::{Notification, Severity};
use crate::config::MonitoringSettings;
use crate::time_fmt::{now_ms, rfc3339_from_ms};

/// The JSON body of a webhook post (and of the log line).
pub(super) fn payload(n: &Notification, instance: &str) -> serde_json::Value {
    let a = &n.alert;
    json!({
        "status": n.status.as_str(),
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
    // HMAC accepts keys of any length: new_from_slice cannot fail here.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends notifications: to the log at once, to the webhook from a queue
/// with retries and backoff.
#[derive(Clone)]
pub(crate) struct Notifier {
    queue: Option<mpsc::Sender<Notification>>,
    instance: String,
    /// Notifications queued or being delivered, so that a shutdown can
    /// wait for them: an exit must not swallow the last resolution.
    undelivered: Arc<std::sync::atomic::AtomicUsize>,
}

impl Notifier {
    /// `retries` counts the webhook's retries beside the server's others
    /// (`retries_total{operation="alert_webhook"}`).
    pub(crate) fn new(
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

    pub(crate) fn send(&self, n: Notification) {
        let body = payload(&n, &self.instance);
        if Severity::parse(&n.alert.severity) == Some(Severity::High) {
            tracing::error!(alert = %body, "alert {}", n.status.as_str());
        } else {
            tracing::warn!(alert = %body, "alert {}", n.status.as_str());
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
    pub(crate) async fn drain(&self, limit: Duration) -> bool {
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

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        let s = signature(&SecretString::from("k"), b"body");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
    }
}
