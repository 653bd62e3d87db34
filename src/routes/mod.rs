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
pub mod labels;
pub mod monitoring;
pub mod openapi;
pub mod pages;
pub mod tiktok;

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::state::AppState;
use labels::RouteLabels;

/// The server's routes in two groups, because they take different
/// middleware stacks (see [`crate::middleware::apply`]), and the templates
/// of both for the metrics labels.
pub struct Routes {
    /// `GET` routes that read no body and answer bytes compressed ahead of
    /// time (`/`, `/assets/{name}`) or a few hundred bytes (the health
    /// probes, `/api/health*`, `/livez`, `/readyz`): nothing worth
    /// compressing, no body to read or limit, nothing that changes state.
    pub light: Router<()>,
    /// Everything else, with the fallback (404).
    pub rest: Router<()>,
    pub labels: RouteLabels,
}

/// A router that records each route's template as it registers it, so the
/// labels cannot drift from the routing.
pub struct RouteTable {
    router: Router<AppState>,
    labels: RouteLabels,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self {
            router: Router::new(),
            labels: RouteLabels::default(),
        }
    }
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Router::route`, recording `path`.
    pub fn route(mut self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        self.labels.add(path);
        self.router = self.router.route(path, method_router);
        self
    }

    /// `Router::merge`, with the other table's templates.
    fn merge(mut self, other: RouteTable) -> Self {
        self.labels.extend(&other.labels);
        self.router = self.router.merge(other.router);
        self
    }
}

/// Every route of the server; `extra` lets tests mount probes (a handler that
/// panics or sleeps) behind the very same middleware.
pub fn router(state: AppState, extra: Option<RouteTable>) -> Routes {
    let (api, mut doc) = OpenApiRouter::with_openapi(openapi::base_document())
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
        .routes(routes!(openapi::document))
        .split_for_parts();
    let (probe_api, mut probe_doc) = OpenApiRouter::new()
        .routes(routes!(health::overall))
        .routes(routes!(health::component))
        .split_for_parts();
    openapi::declare_middleware_responses(&mut doc, openapi::Stack::Full);
    openapi::declare_middleware_responses(&mut probe_doc, openapi::Stack::Light);
    doc.merge(probe_doc);
    // Every API route's template is a path of the generated document.
    let mut labels = RouteLabels::default();
    for template in doc.paths.paths.keys() {
        labels.add(template);
    }
    openapi::publish(doc);

    let mut table = RouteTable {
        router: Router::new().merge(api),
        labels,
    }
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
    .route("/metrics", get(monitoring::metrics));
    if let Some(extra) = extra {
        table = table.merge(extra);
    }
    let light = RouteTable {
        router: Router::new().merge(probe_api),
        labels: RouteLabels::default(),
    }
    .route("/", get(pages::landing))
    .route("/assets/{name}", get(pages::asset))
    .route("/livez", get(health::livez))
    .route("/readyz", get(health::readyz));
    let mut labels = table.labels;
    labels.extend(&light.labels);
    Routes {
        light: light.router.with_state(state.clone()),
        rest: table.router.fallback(not_found).with_state(state),
        labels,
    }
}

async fn not_found() -> AppError {
    AppError::NotFound
}
