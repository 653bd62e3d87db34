//! HTTP routes: parse, call, respond. Each module owns one path prefix:
//! `pages` (`/`, `/assets`), `health` (`/api/health*`, `/livez`, `/readyz`),
//! `openapi` (`/api/openapi.json`), `auth` (`/api/auth/*`), `admin`
//! (`/api/admin/*`), `account_pages` (`/login`, `/register`, `/logout`,
//! `/platforms`).
//!
//! `/api` routes are registered through utoipa's `OpenApiRouter`, so the
//! OpenAPI document is generated from the same declarations that route.

pub mod account_pages;
pub mod admin;
pub mod auth;
pub mod health;
pub mod monitoring;
pub mod openapi;
pub mod pages;
pub mod tiktok;

use axum::Router;
use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::state::AppState;

/// The server's routes in two groups, because they take different
/// middleware stacks (see [`crate::middleware::apply`]).
pub struct Routes {
    /// `GET` routes answered from precompressed bytes in memory (`/`,
    /// `/assets/{name}`): nothing to compress, no body to read or limit,
    /// nothing that changes state.
    pub precompressed: Router<()>,
    /// Everything else, with the fallback (404).
    pub rest: Router<()>,
}

/// Every route of the server; `extra` lets tests mount probes (a handler that
/// panics or sleeps) behind the very same middleware.
pub fn router(state: AppState, extra: Option<Router<AppState>>) -> Routes {
    let (api, doc) = OpenApiRouter::with_openapi(openapi::base_document())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::current_session))
        .routes(routes!(auth::revoke_all_sessions))
        .routes(routes!(admin::audit_log))
        .routes(routes!(tiktok::start))
        .routes(routes!(tiktok::callback))
        .routes(routes!(tiktok::status, tiktok::disconnect))
        .routes(routes!(monitoring::dashboard))
        .routes(routes!(monitoring::health_trends))
        .routes(routes!(monitoring::alerts))
        .routes(routes!(monitoring::scaling))
        .routes(routes!(health::overall))
        .routes(routes!(health::component))
        .routes(routes!(openapi::document))
        .split_for_parts();
    openapi::publish(doc);

    let mut router = Router::new()
        .merge(api)
        .route(
            "/login",
            get(account_pages::login_page).post(account_pages::login_submit),
        )
        .route(
            "/register",
            get(account_pages::register_page).post(account_pages::register_submit),
        )
        .route("/logout", post(account_pages::logout_submit))
        .route("/platforms", get(account_pages::platforms_page))
        .route("/platforms/connect/tiktok", get(tiktok::connect_page))
        .route(
            "/platforms/connect/tiktok/disconnect",
            post(tiktok::disconnect_submit),
        )
        .route("/platforms/connect/tiktok/avatar", get(tiktok::avatar))
        .route("/admin/monitoring", get(monitoring::page_view))
        .route("/metrics", get(monitoring::metrics))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz));
    if let Some(sandbox) = &state.tiktok.sandbox {
        router = router.nest_service(crate::tiktok::SANDBOX_PREFIX, sandbox.router());
    }
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let precompressed = Router::new()
        .route("/", get(pages::landing))
        .route("/assets/{name}", get(pages::asset))
        .with_state(state.clone());
    Routes {
        precompressed,
        rest: router.fallback(not_found).with_state(state),
    }
}

async fn not_found() -> AppError {
    AppError::NotFound
}
