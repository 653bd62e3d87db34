//! Health model and aggregation.
//!
//! Checks run in the background ([`sampler::HealthSampler`]); the HTTP
//! endpoints only read the latest sample, so probe traffic never multiplies
//! load on a dependency and a hung dependency never hangs an endpoint.

pub(crate) mod checks;
pub(crate) mod sampler;

use serde::Serialize;
use serde_json::Value;

pub(crate) use sampler::HealthSampler;

#[derive(
    Clone, Copy, Debug, Default, Serialize, PartialEq, Eq, PartialOrd, Ord, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// `ComponentHealth` of the API contract.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentHealth {
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Milliseconds the check took.
    pub response_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// When the check ran (RFC 3339).
    pub checked_at: String,
}

impl ComponentHealth {
    /// The anonymous view: status only, no message or details.
    pub fn redacted(&self) -> Self {
        Self {
            message: None,
            details: None,
            ..self.clone()
        }
    }
}

/// `HealthStatus` of the API contract.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    pub status: Status,
    pub timestamp: String,
    pub components: Vec<ComponentHealth>,
    /// Milliseconds the latest sampling round took.
    pub response_time: u64,
}

/// What one check found.
#[derive(Clone, Debug)]
pub struct CheckOutcome {
    pub status: Status,
    pub message: Option<String>,
    pub details: Option<Value>,
}

impl CheckOutcome {
    pub fn healthy() -> Self {
        Self {
            status: Status::Healthy,
            message: None,
            details: None,
        }
    }

    pub fn degraded(message: impl Into<String>) -> Self {
        Self {
            status: Status::Degraded,
            message: Some(message.into()),
            details: None,
        }
    }

    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self {
            status: Status::Unhealthy,
            message: Some(message.into()),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// One component's check. Implementations must not cache: the sampler calls
/// them on its own schedule and bounds each call with a timeout.
#[async_trait::async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// The component name in the API (`database`, `auth`, `config`, `external`).
    fn name(&self) -> &'static str;
    /// Whether this component being unhealthy makes the whole service unhealthy.
    fn critical(&self) -> bool;
    async fn check(&self) -> CheckOutcome;
}

/// unhealthy if a critical component is unhealthy; degraded if any
/// component is degraded or a non-critical one is unhealthy; else healthy.
pub(crate) fn aggregate(components: impl IntoIterator<Item = (bool, Status)>) -> Status {
    let mut overall = Status::Healthy;
    for (critical, status) in components {
        let effect = match (critical, status) {
            (true, Status::Unhealthy) => Status::Unhealthy,
            (_, Status::Healthy) => Status::Healthy,
            _ => Status::Degraded,
        };
        overall = overall.max(effect);
    }
    overall
}

#[cfg(test)]
mod tests {
    use super::Status::*;
    use super::*;

    #[test]
    fn aggregation_follows_the_contract() {
        assert_eq!(aggregate([(true, Healthy), (false, Healthy)]), Healthy);
        assert_eq!(aggregate([(true, Degraded), (false, Healthy)]), Degraded);
        assert_eq!(aggregate([(true, Healthy), (false, Unhealthy)]), Degraded);
        assert_eq!(aggregate([(true, Unhealthy), (false, Healthy)]), Unhealthy);
        assert_eq!(
            aggregate([(false, Unhealthy), (true, Unhealthy)]),
            Unhealthy
        );
        assert_eq!(aggregate([]), Healthy);
    }
}
