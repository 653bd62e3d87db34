//! Integration tests: the real server on a random port, over real HTTP.
//! One test binary (link once); modules by capability.

mod support;

mod account_pages;
mod accounts;
mod bad_input;
mod browser;
mod config_strictness;
mod connections;
mod deploy;
mod errors;
mod health;
mod landing;
mod lifecycle;
mod logs;
mod monitoring;
mod monitoring_outage;
mod openapi;
mod resilience;
mod scale_out;
mod shared_tier;
mod startup;
mod tiktok;
