//! [`HealthSampler`]: runs every check in the background on an interval, each
//! under its own timeout and in its own task (a panicking check is reported,
//! not propagated), and keeps the latest results for the endpoints to read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::future::join_all;
use tokio::sync::watch;

use super::{ComponentHealth, HealthCheck, HealthStatus, Status, aggregate};
use crate::time_fmt::{now_ms, now_rfc3339};

/// The latest sampling round.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Each component with whether it is critical.
    pub components: Vec<(ComponentHealth, bool)>,
    pub duration_ms: u64,
    pub taken_at_ms: i64,
    /// The `/api/health` bodies, serialized once per round: anonymous
    /// (statuses only) and detailed (messages and details).
    pub anonymous: SerializedHealth,
    pub detailed: SerializedHealth,
}

/// The overall health as JSON, around the one field that changes per
/// request (`timestamp`): probes are the busiest callers, and serializing
/// the round for each of them cost more than the rest of the request.
#[derive(Clone, Debug, Default)]
pub struct SerializedHealth {
    pub status: Status,
    /// `{"status":"…","timestamp":"`
    before_timestamp: String,
    /// `","components":[…],"responseTime":…}`
    after_timestamp: String,
}

impl SerializedHealth {
    fn new(components: &[(ComponentHealth, bool)], duration_ms: u64, detailed: bool) -> Self {
        let status = aggregate(components.iter().map(|(c, crit)| (*crit, c.status)));
        let shown: Vec<ComponentHealth> = components
            .iter()
            .map(|(c, _)| if detailed { c.clone() } else { c.redacted() })
            .collect();
        // Field order and names as `HealthStatus` serializes them (a test
        // holds the two equal).
        let before_timestamp = format!(
            "{{\"status\":{},\"timestamp\":\"",
            serde_json::to_string(&status).unwrap_or_default()
        );
        let after_timestamp = format!(
            "\",\"components\":{},\"responseTime\":{duration_ms}}}",
            serde_json::to_string(&shown).unwrap_or_else(|_| "[]".into())
        );
        Self {
            status,
            before_timestamp,
            after_timestamp,
        }
    }

    /// The body with `timestamp` (RFC 3339) filled in.
    pub fn render(&self, timestamp: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.before_timestamp.len() + timestamp.len() + self.after_timestamp.len(),
        );
        out.extend_from_slice(self.before_timestamp.as_bytes());
        out.extend_from_slice(timestamp.as_bytes());
        out.extend_from_slice(self.after_timestamp.as_bytes());
        out
    }
}

pub struct HealthSampler {
    checks: Vec<Arc<dyn HealthCheck>>,
    timeout: Duration,
    latest: ArcSwap<Snapshot>,
    /// The time of the latest round, for whoever keeps every sample
    /// (monitoring history), not only the latest.
    rounds: watch::Sender<i64>,
}

impl HealthSampler {
    pub fn new(checks: Vec<Arc<dyn HealthCheck>>, timeout: Duration) -> Self {
        Self {
            checks,
            timeout,
            latest: ArcSwap::from_pointee(Snapshot::default()),
            rounds: watch::Sender::new(0),
        }
    }

    /// Runs every check now, concurrently, and stores the results.
    pub async fn sample_now(&self) -> Arc<Snapshot> {
        let started = Instant::now();
        let timeout = self.timeout;
        let rounds = self.checks.iter().map(|check| {
            let check = Arc::clone(check);
            async move {
                let began = Instant::now();
                let name = check.name();
                let critical = check.critical();
                let task = tokio::spawn(async move { check.check().await });
                let outcome = match tokio::time::timeout(timeout, task).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(join)) => {
                        tracing::error!(component = name, error = %join, "health check panicked");
                        super::CheckOutcome::unhealthy("check failed unexpectedly")
                    }
                    Err(_) => super::CheckOutcome::unhealthy(format!(
                        "timed out after {} ms",
                        timeout.as_millis()
                    )),
                };
                let health = ComponentHealth {
                    name: name.to_owned(),
                    status: outcome.status,
                    message: outcome.message,
                    response_time: began.elapsed().as_millis() as u64,
                    details: outcome.details,
                    checked_at: now_rfc3339(),
                };
                (health, critical)
            }
        });
        let components = join_all(rounds).await;
        for (c, _) in &components {
            if c.status != Status::Healthy {
                tracing::warn!(
                    component = %c.name,
                    status = c.status.as_str(),
                    reason = c.message.as_deref().unwrap_or(""),
                    "component not healthy"
                );
            }
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        let snapshot = Arc::new(Snapshot {
            anonymous: SerializedHealth::new(&components, duration_ms, false),
            detailed: SerializedHealth::new(&components, duration_ms, true),
            components,
            duration_ms,
            taken_at_ms: now_ms(),
        });
        self.latest.store(Arc::clone(&snapshot));
        self.rounds.send_replace(snapshot.taken_at_ms);
        snapshot
    }

    /// Changes after every round; [`snapshot`](Self::snapshot) has it.
    pub fn rounds(&self) -> watch::Receiver<i64> {
        self.rounds.subscribe()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.latest.load_full()
    }

    /// Samples every `interval` until `stop` turns true. The first round
    /// waits a period: the build sampled already.
    pub fn spawn(self: Arc<Self>, interval: Duration, stop: watch::Receiver<bool>) {
        crate::lifecycle::spawn_periodic(
            interval,
            crate::lifecycle::FirstRound::AfterOnePeriod,
            stop,
            move || {
                let sampler = Arc::clone(&self);
                async move {
                    sampler.sample_now().await;
                }
            },
        );
    }

    /// The overall status; `detailed` keeps messages and details.
    pub fn overall(&self, detailed: bool) -> HealthStatus {
        let snap = self.snapshot();
        let status = aggregate(snap.components.iter().map(|(c, crit)| (*crit, c.status)));
        HealthStatus {
            status,
            timestamp: now_rfc3339(),
            components: snap
                .components
                .iter()
                .map(|(c, _)| if detailed { c.clone() } else { c.redacted() })
                .collect(),
            response_time: snap.duration_ms,
        }
    }

    /// The overall health body, as [`overall`](Self::overall)`(detailed)`
    /// would serialize it.
    pub fn overall_body(&self, detailed: bool) -> (Status, Vec<u8>) {
        let snap = self.latest.load();
        let body = if detailed {
            &snap.detailed
        } else {
            &snap.anonymous
        };
        if body.before_timestamp.is_empty() {
            // Never sampled (the default snapshot): serialize as usual.
            let health = self.overall(detailed);
            return (
                health.status,
                serde_json::to_vec(&health).unwrap_or_default(),
            );
        }
        (body.status, body.render(&now_rfc3339()))
    }

    /// One component's latest result.
    pub fn component(&self, name: &str, detailed: bool) -> Option<ComponentHealth> {
        self.snapshot()
            .components
            .iter()
            .find(|(c, _)| c.name == name)
            .map(|(c, _)| if detailed { c.clone() } else { c.redacted() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckOutcome;

    struct Fixed(&'static str, bool, Status);

    #[async_trait::async_trait]
    impl HealthCheck for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn critical(&self) -> bool {
            self.1
        }
        async fn check(&self) -> CheckOutcome {
            match self.2 {
                Status::Healthy => CheckOutcome::healthy(),
                Status::Degraded => CheckOutcome::degraded("slow \"quoted\""),
                Status::Unhealthy => CheckOutcome::unhealthy("down")
                    .with_details(serde_json::json!({ "secret": "x" })),
            }
        }
    }

    #[tokio::test]
    async fn the_preserialized_bodies_are_what_serde_would_write() {
        let sampler = HealthSampler::new(
            vec![
                Arc::new(Fixed("database", true, Status::Healthy)),
                Arc::new(Fixed("external", false, Status::Unhealthy)),
                Arc::new(Fixed("config", true, Status::Degraded)),
            ],
            Duration::from_secs(1),
        );
        sampler.sample_now().await;
        for detailed in [false, true] {
            let mut expected = sampler.overall(detailed);
            let (status, body) = sampler.overall_body(detailed);
            let mut got: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(status, expected.status);
            // Only the timestamp may differ (they were taken a moment apart).
            got["timestamp"] = serde_json::Value::Null;
            expected.timestamp = String::new();
            let mut expected = serde_json::to_value(&expected).unwrap();
            expected["timestamp"] = serde_json::Value::Null;
            assert_eq!(got, expected, "detailed: {detailed}");
            let text = String::from_utf8(body).unwrap();
            assert_eq!(text.contains("secret"), detailed, "{text}");
        }
    }
}
