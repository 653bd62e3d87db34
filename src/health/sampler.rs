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
}

pub struct HealthSampler {
    checks: Vec<Arc<dyn HealthCheck>>,
    timeout: Duration,
    latest: ArcSwap<Snapshot>,
}

impl HealthSampler {
    pub fn new(checks: Vec<Arc<dyn HealthCheck>>, timeout: Duration) -> Self {
        Self {
            checks,
            timeout,
            latest: ArcSwap::from_pointee(Snapshot::default()),
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
                    message = c.message.as_deref().unwrap_or(""),
                    "component not healthy"
                );
            }
        }
        let snapshot = Arc::new(Snapshot {
            components,
            duration_ms: started.elapsed().as_millis() as u64,
            taken_at_ms: now_ms(),
        });
        self.latest.store(Arc::clone(&snapshot));
        snapshot
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.latest.load_full()
    }

    /// Samples every `interval` until `stop` turns true.
    pub fn spawn(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the build sampled already
            loop {
                tokio::select! {
                    _ = tick.tick() => { self.sample_now().await; }
                    _ = crate::lifecycle::stopped(&mut stop) => break,
                }
            }
        });
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

    /// One component's latest result.
    pub fn component(&self, name: &str, detailed: bool) -> Option<ComponentHealth> {
        self.snapshot()
            .components
            .iter()
            .find(|(c, _)| c.name == name)
            .map(|(c, _)| if detailed { c.clone() } else { c.redacted() })
    }
}
