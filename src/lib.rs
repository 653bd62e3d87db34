//! Huntaze production web server.
//!
//! The binary (`src/main.rs`) is a thin shell around [`cli::run`]; every test
//! builds the server through the same [`app::AppBuilder`] that production uses,
//! so tests exercise exactly the router and middleware stack that ships.

pub mod accounts;
pub mod app;
pub mod assets;
pub mod audit;
pub mod cache;
pub mod circuit;
pub mod cli;
pub mod compress;
pub mod config;
pub mod crypto;
pub mod error;
pub mod health;
pub mod landing;
pub mod lifecycle;
pub mod memory;
pub mod middleware;
pub mod monitoring;
pub mod precompressed;
pub mod redis_tier;
pub mod retry;
pub mod routes;
pub mod serve;
pub mod sessions;
pub mod store;
pub mod telemetry;
pub mod tiktok;
pub mod time_fmt;
pub mod views;

pub use app::{AppBuilder, Application, ShutdownHandle};
pub use config::Config;
pub use error::AppError;
pub use middleware::state::AppState;
