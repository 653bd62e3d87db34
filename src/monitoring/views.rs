//! What the monitoring API answers: the dashboard's data, alerts, health
//! trends and the scaling forecast, as serialized on the wire.

use serde::Serialize;

use crate::store::monitoring::AlertRow;
use crate::time_fmt::rfc3339_from_ms;

/// A dashboard range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    M15,
    H1,
    H6,
    H24,
    D7,
}

impl Range {
    /// Every range, in the order the API lists them.
    pub const ALL: [Range; 5] = [Range::M15, Range::H1, Range::H6, Range::H24, Range::D7];

    /// Parsed through [`Range::ALL`], so what the API accepts and what
    /// the OpenAPI document lists are one list.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Range::M15 => "15m",
            Range::H1 => "1h",
            Range::H6 => "6h",
            Range::H24 => "24h",
            Range::D7 => "7d",
        }
    }
    pub fn millis(self) -> i64 {
        match self {
            Range::M15 => 15 * 60_000,
            Range::H1 => 3_600_000,
            Range::H6 => 6 * 3_600_000,
            Range::H24 => 24 * 3_600_000,
            Range::D7 => 7 * 24 * 3_600_000,
        }
    }
    /// Width of one chart point.
    pub fn step_ms(self) -> i64 {
        match self {
            Range::M15 | Range::H1 => 60_000,
            Range::H6 => 5 * 60_000,
            Range::H24 => 15 * 60_000,
            Range::D7 => 2 * 3_600_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStats {
    pub route: String,
    pub requests: u64,
    pub rate_per_sec: f64,
    /// Percent of requests answered with 5xx.
    pub error_rate: f64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// Point starts, epoch seconds.
    pub timestamps: Vec<i64>,
    pub requests_per_sec: Vec<f64>,
    /// Percent 5xx.
    pub error_rate: Vec<f64>,
    pub p95: Vec<Option<f64>>,
    pub p99: Vec<Option<f64>>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheView {
    pub hit_ratio: Option<f64>,
    #[schema(value_type = Object)]
    pub stats: Option<crate::cache::CacheStats>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    pub id: String,
    pub rule: String,
    pub key: String,
    pub severity: String,
    pub state: String,
    pub summary: String,
    pub started_at: String,
    pub fired_at: Option<String>,
    pub resolved_at: Option<String>,
    pub notifications: i64,
}

impl From<AlertRow> for AlertView {
    fn from(a: AlertRow) -> Self {
        Self {
            id: a.id,
            rule: a.rule,
            key: a.alert_key,
            severity: a.severity,
            state: a.state.as_str().to_owned(),
            summary: a.summary,
            started_at: rfc3339_from_ms(a.started_at),
            fired_at: a.fired_at.map(rfc3339_from_ms),
            resolved_at: a.resolved_at.map(rfc3339_from_ms),
            notifications: a.notifications,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsView {
    pub active: Vec<AlertView>,
    pub recent: Vec<AlertView>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Requests per second over the last 5 minutes.
    pub current_rate: f64,
    pub forecast_15m: f64,
    pub forecast_60m: f64,
    pub capacity_per_instance: f64,
    pub instances_15m: u32,
    pub instances_60m: u32,
    pub method: String,
}

/// `DashboardData`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardData {
    pub range: String,
    pub generated_at: String,
    pub step_seconds: i64,
    pub overall: RouteStats,
    pub routes: Vec<RouteStats>,
    pub series: Series,
    pub health: crate::health::HealthStatus,
    pub cache: CacheView,
    #[schema(value_type = Object)]
    pub pool: crate::store::PoolStats,
    pub alerts: AlertsView,
    pub scaling: Scaling,
    /// Every instance whose traffic is in the totals above.
    pub instances: Vec<InstanceStats>,
}

/// One instance's share of the range.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStats {
    pub instance: String,
    pub requests: i64,
    pub errors: i64,
    /// Start of the latest minute it reported.
    pub last_seen: String,
}

/// One health sample of a component (`HealthTrend`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthTrend {
    pub component: String,
    pub timestamp: String,
    pub status: String,
    pub response_time: i64,
    pub instance: String,
}
