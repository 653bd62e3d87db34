//! HTTP routes: parse, call, respond. Each module owns one path prefix:
//! `pages` (`/`, `/assets`, `/favicon.ico`), `health` (`/api/health*`, `/livez`, `/readyz`),
//! `openapi` (`/api/openapi.json`), `auth` (`/api/auth/*`), `admin`
//! (`/api/admin/*`), `account_pages` (`/login`, `/register`, `/logout`,
//! `/platforms`), `tiktok` (the TikTok connection, API and pages),
//! `monitoring` (`/api/monitoring/*`, `/admin/monitoring`, `/metrics`).
//! What several of them share lives in `respond` (how answers are written)
//! and `access` (who is calling).
//!
//! Every route is registered here with its [`RoutePolicy`]: its error
//! format, whether load shedding may refuse it, whether its failures page
//! someone, and its middleware stack. Paths no route matches follow the
//! prefix rule of [`RoutePolicy::unmatched`].
//!
//! `/api` routes are registered through utoipa's `OpenApiRouter`, so the
//! OpenAPI document is generated from the same declarations that route.

pub(crate) mod access;
pub(crate) mod account_pages;
pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod health;
pub(crate) mod monitoring;
pub(crate) mod openapi;
pub(crate) mod pages;
pub(crate) mod respond;
pub(crate) mod tiktok;

use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Router};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::error::AppError;
pub(crate) use crate::middleware::Routes;
pub use crate::middleware::route_policy::RoutePolicy;
use crate::middleware::route_policy::{RouteLabels, Stack};
use crate::middleware::state::AppState;

/// A router that records each route's template and policy as it registers
/// it, so the labels and policies cannot drift from the routing, and that
/// puts the route behind the middleware stack its policy names.
pub struct RouteTable {
    light: Router<AppState>,
    full: Router<AppState>,
    labels: RouteLabels,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self {
            light: Router::new(),
            full: Router::new(),
            labels: RouteLabels::default(),
        }
    }
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Router::route`, recording `path` with its policy.
    pub fn route(
        mut self,
        path: &str,
        policy: RoutePolicy,
        method_router: MethodRouter<AppState>,
    ) -> Self {
        self.labels.add(path, policy);
        match policy.stack {
            Stack::Light => self.light = self.light.route(path, method_router),
            Stack::Full => self.full = self.full.route(path, method_router),
        }
        self
    }

    /// `Router::merge`, with the other table's templates and policies.
    fn merge(mut self, other: RouteTable) -> Self {
        self.labels.extend(&other.labels);
        self.light = self.light.merge(other.light);
        self.full = self.full.merge(other.full);
        self
    }
}

/// The `/api` routes, one `OpenApiRouter` per middleware stack (the
/// document declares what each stack can answer), recording each route's
/// templates and policy as [`RouteTable`] does.
struct ApiTable {
    light: OpenApiRouter<AppState>,
    full: OpenApiRouter<AppState>,
    labels: RouteLabels,
}

impl ApiTable {
    fn routes(mut self, policy: RoutePolicy, route: UtoipaMethodRouter<AppState>) -> Self {
        for template in route.1.paths.keys() {
            self.labels.add(template, policy);
        }
        match policy.stack {
            Stack::Light => self.light = self.light.routes(route),
            Stack::Full => self.full = self.full.routes(route),
        }
        self
    }
}

/// Every route of the server; `extra` lets tests mount probes (a handler that
/// panics or sleeps) behind the very same middleware. The routers take the
/// state in [`crate::middleware::apply`].
pub fn router(extra: Option<RouteTable>) -> Routes {
    use RoutePolicy as P;
    const PROBE: RoutePolicy = P::API.shed_exempt().light();
    // This server's own document, which its route serves once built: per
    // server, so that two servers in one process cannot mix theirs.
    let document = openapi::Document::default();
    let (schemas, paths, serve_document) = routes!(openapi::document);
    let serve_document = serve_document.layer(Extension(document.clone()));
    let api = ApiTable {
        light: OpenApiRouter::new(),
        full: OpenApiRouter::with_openapi(openapi::base_document()),
        labels: RouteLabels::default(),
    }
    .routes(P::API.critical(), routes!(auth::register))
    .routes(P::API.critical(), routes!(auth::login))
    .routes(P::API.critical(), routes!(auth::logout))
    .routes(P::API.critical(), routes!(auth::current_session))
    .routes(P::API.critical(), routes!(auth::revoke_all_sessions))
    .routes(P::API, routes!(admin::audit_log))
    .routes(P::API.critical(), routes!(tiktok::start))
    .routes(P::API.critical(), routes!(tiktok::callback))
    .routes(P::API, routes!(tiktok::status, tiktok::disconnect))
    .routes(P::API, routes!(monitoring::dashboard))
    .routes(P::API, routes!(monitoring::health_trends))
    .routes(P::API, routes!(monitoring::alerts))
    .routes(P::API, routes!(monitoring::errors))
    .routes(P::API, routes!(monitoring::scaling))
    .routes(P::API, (schemas, paths, serve_document))
    .routes(P::API.critical().light(), routes!(health::overall))
    .routes(P::API.critical().light(), routes!(health::component));
    let (full_api, mut doc) = api.full.split_for_parts();
    let (light_api, mut light_doc) = api.light.split_for_parts();
    openapi::declare_middleware_responses(&mut doc, Stack::Full);
    openapi::declare_middleware_responses(&mut light_doc, Stack::Light);
    doc.merge(light_doc);
    document.publish(&doc);

    let mut table = RouteTable {
        light: Router::new().merge(light_api),
        full: Router::new().merge(full_api),
        labels: api.labels,
    }
    .route(
        "/login",
        P::PAGE,
        get(account_pages::login_page).post(account_pages::login_submit),
    )
    .route(
        "/register",
        P::PAGE,
        get(account_pages::register_page).post(account_pages::register_submit),
    )
    .route("/logout", P::PAGE, post(account_pages::logout_submit))
    .route("/platforms", P::PAGE, get(account_pages::platforms_page))
    .route(
        "/platforms/connect/tiktok",
        P::PAGE,
        get(tiktok::connect_page),
    )
    .route(
        "/platforms/connect/tiktok/disconnect",
        P::PAGE,
        post(tiktok::disconnect_submit),
    )
    .route(
        "/platforms/connect/tiktok/avatar",
        P::PAGE,
        get(tiktok::avatar),
    )
    .route("/admin/monitoring", P::PAGE, get(monitoring::page_view))
    .route("/metrics", P::API.shed_exempt(), get(monitoring::metrics))
    .route("/", P::PAGE.critical().light(), get(pages::landing))
    .route("/assets/{name}", P::PAGE.light(), get(pages::asset))
    .route("/favicon.ico", P::PAGE.light(), get(pages::favicon))
    .route("/livez", PROBE, get(health::livez))
    .route("/readyz", PROBE.critical(), get(health::readyz));
    if let Some(extra) = extra {
        table = table.merge(extra);
    }
    Routes {
        light: table.light,
        full: table.full.fallback(not_found),
        labels: table.labels,
    }
}

async fn not_found() -> AppError {
    AppError::NotFound
}
