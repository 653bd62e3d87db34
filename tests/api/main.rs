//! Integration tests: the real server on a random port, over real HTTP.
//! One test binary (link once); modules by capability.

mod support;

mod account_pages;
mod accounts;
mod accounts_limits;
mod api_fuzz;
mod avatar;
mod bad_input;
mod browser;
mod cert_watch;
mod config_strictness;
mod connections;
mod create_admin;
mod deploy;
mod errors;
mod health;
mod https;
mod https_redirect;
mod https_reload;
mod landing;
mod lifecycle;
mod logs;
mod metrics_access;
mod monitoring;
mod monitoring_alerts;
mod monitoring_dashboard;
mod monitoring_history;
mod monitoring_outage;
mod openapi;
mod pg_tls;
mod redis_tls;
mod resilience;
mod sandbox;
mod scale_out;
mod session_cookie;
mod shared_tier;
mod startup;
mod tiktok;
mod tiktok_failures;
mod tiktok_limits;
mod tiktok_setup;
mod tiktok_tokens;
mod tls_pair;
