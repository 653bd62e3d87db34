//! Huntaze production web server.
//!
//! The binary (`src/main.rs`) is a thin shell around [`run`]; every test
//! builds the server through the same [`AppBuilder`] that production uses,
//! so tests exercise exactly the router and middleware stack that ships.
//!
//! The modules are private: what is exported below is exactly what the
//! binary, the integration tests, the benches and the examples use, so the
//! compiler can report everything else that nothing uses.

// Set here rather than in Cargo.toml's `[lints]`, which would also apply
// them to the test and bench crates (whose helpers are `pub` by design).
// An item nothing outside the crate uses says so with `pub(crate)`, so the
// compiler can report it once it becomes dead.
#![warn(unreachable_pub)]
// A path spelled longer than what is in scope hides which name is meant.
#![warn(unused_qualifications)]
// A panic on a request path takes the connection down with it: the server's
// fallible steps return errors (unit tests may unwrap: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod app;
mod assets;
mod audit;
mod cache;
mod circuit;
mod cli;
mod compress;
mod config;
mod crypto;
mod error;
mod health;
mod landing;
mod lifecycle;
mod memory;
mod middleware;
mod monitoring;
mod precompressed;
mod redis_tier;
mod retry;
mod routes;
mod serve;
mod sessions;
mod store;
mod telemetry;
mod tiktok;
mod time_fmt;
mod tls;
mod views;

// Assembly and start-up.
pub use app::{AppBuilder, Application, Hangups, ReloadHandle, ShutdownHandle};
pub use cli::run;
pub use config::{Config, Environment, RedisSettings};
pub use middleware::state::AppState;

// Routing, the request pipeline and the error shape, for tests that mount
// their own probe routes and for the hot-path benches.
pub use error::{AppError, ErrorBody, ErrorResponse};
pub use middleware::extract::{ApiJson, ApiQuery};
pub use middleware::request_id::reserve_slot;
pub use middleware::security_headers::SecurityHeaders;
pub use precompressed::{PipelineHeaders, Precompressed};
pub use routes::{RoutePolicy, RouteTable, router};

// Limits and names the OpenAPI document must agree with.
pub use accounts::validate::{
    DISPLAY_NAME_MAX, EMAIL_MAX, LOGIN_PASSWORD_MAX, PASSWORD_MAX, PASSWORD_MIN,
};
pub use monitoring::Range;
pub use routes::admin::AUDIT_LIMITS;
pub use routes::health::COMPONENTS as HEALTH_COMPONENTS;

// Services and their parts that tests and benches drive directly.
pub use accounts::password::PasswordHasher;
pub use accounts::validate::Password;
pub use circuit::CircuitState;
pub use health::{CheckOutcome, HealthCheck, Status as HealthStatus};
pub use monitoring::alerts::signature as alert_signature;
pub use monitoring::metrics::HttpMetrics;
pub use monitoring::rollup::Agg;
pub use redis_tier::{RedisTier, SharedLifetimes};
pub use sessions::SessionStore;
pub use store::rollup::{RollupRow, SampleRow};
pub use store::{Db, Fault as StoreFault, classify as classify_store_error};
pub use telemetry::json_layer;
pub use time_fmt::{now_ms, now_rfc3339};
pub use tls::{CertError, CertPaths, CertResolver, ServingCert};

/// The fake TikTok the tests and local development connect to.
pub mod tiktok_sandbox {
    pub use crate::tiktok::SANDBOX_PREFIX;
    pub use crate::tiktok::sandbox::{
        ChallengeEncoding, Endpoint, Fault, Sandbox, SandboxSettings, serve,
    };
}
