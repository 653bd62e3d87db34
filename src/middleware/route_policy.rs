//! What the request pipeline knows about each route: its template (the
//! metrics' `http_route` label) and its policy, looked up by path.
//!
//! Every route declares its [`RoutePolicy`] where it is registered
//! (`routes::router`), and the pipeline reads the policy of the route the
//! path matches: the error format, whether load shedding may refuse it,
//! whether its 5xx rate pages someone, and which middleware stack it takes.
//!
//! A path that matches no route (a 404, or the TikTok sandbox, which the
//! pipeline hands on before this lookup) gets [`RoutePolicy::unmatched`]:
//! JSON errors under `/api` (`/api` itself and `/api/…`), HTML elsewhere,
//! shed like any request, not critical. It is labelled
//! [`UNMATCHED`](crate::monitoring::metrics::UNMATCHED) in the metrics.
//!
//! The request pipeline wraps the whole router once instead of being layered
//! onto every route: axum's per-route layering boxes and clones one more
//! service and boxes one more future on every request. Outside the router,
//! axum's `MatchedPath` is not there yet, so the pipeline asks this table,
//! built from the very registrations that route, with the same matcher axum
//! uses (matchit 0.8, same `{param}` / `{*rest}` syntax).

use std::collections::HashSet;

/// How a route's error responses are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `ErrorResponse` JSON: APIs, probes and the metrics scrape.
    Json,
    /// The friendly error page: what a browser navigates to.
    Html,
}

/// The middleware a route is registered behind (see
/// [`apply`](super::apply)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// The pipeline alone: for GET routes that read no body and answer
    /// bytes compressed ahead of time or a few hundred bytes, where
    /// compression, the cross-origin guard and the body limits could only
    /// cost time.
    Light,
    /// The pipeline plus compression, the cross-origin guard and the body
    /// limits.
    Full,
}

/// A route's policy, declared where the route is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutePolicy {
    pub errors: ErrorFormat,
    /// Never refused by load shedding: probes and the metrics scrape, so an
    /// overloaded instance is neither killed by its orchestrator nor blind.
    pub shed_exempt: bool,
    /// Its 5xx rate raises the `route_5xx` alert.
    pub critical: bool,
    pub stack: Stack,
}

impl RoutePolicy {
    /// A page for browsers: HTML errors, full stack.
    pub const PAGE: Self = Self {
        errors: ErrorFormat::Html,
        shed_exempt: false,
        critical: false,
        stack: Stack::Full,
    };
    /// An API route: JSON errors, full stack.
    pub const API: Self = Self {
        errors: ErrorFormat::Json,
        ..Self::PAGE
    };

    /// This policy, with failures that page someone.
    pub const fn critical(self) -> Self {
        Self {
            critical: true,
            ..self
        }
    }

    /// This policy, never shed.
    pub const fn shed_exempt(self) -> Self {
        Self {
            shed_exempt: true,
            ..self
        }
    }

    /// This policy, behind the light stack.
    pub const fn light(self) -> Self {
        Self {
            stack: Stack::Light,
            ..self
        }
    }

    /// The policy of a path no route matches: decided by prefix alone.
    pub fn unmatched(path: &str) -> Self {
        if path == "/api" || path.starts_with("/api/") {
            Self::API
        } else {
            Self::PAGE
        }
    }
}

/// A registered template, by its position: what the pipeline keeps while
/// the request runs. An index rather than a shared `Arc<str>`, whose count
/// every request of both workers would bump on the same cache line (the
/// landing page's template is the same for all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteId(usize);

struct Route {
    template: String,
    policy: RoutePolicy,
}

#[derive(Default)]
pub struct RouteLabels {
    matcher: matchit::Router<RouteId>,
    routes: Vec<Route>,
}

impl RouteLabels {
    /// Adds a route template with its policy; registering the same template
    /// twice keeps the first registration.
    ///
    /// # Panics
    /// On a template axum itself would refuse (a conflict with another
    /// one): routes are fixed at build time, so this is a programming error
    /// caught by every test that builds the app, like axum's own panic.
    pub fn add(&mut self, template: &str, policy: RoutePolicy) {
        if self.routes.iter().any(|r| r.template == template) {
            return;
        }
        let id = RouteId(self.routes.len());
        if let Err(e) = self.matcher.insert(template, id) {
            panic!("route template {template:?} rejected: {e}");
        }
        self.routes.push(Route {
            template: template.to_owned(),
            policy,
        });
    }

    /// Adds every route of `other`.
    pub fn extend(&mut self, other: &RouteLabels) {
        for route in &other.routes {
            self.add(&route.template, route.policy);
        }
    }

    /// The template `path` matches, if any.
    pub fn label(&self, path: &str) -> Option<RouteId> {
        self.matcher.at(path).ok().map(|m| *m.value)
    }

    /// The text of a template [`label`](Self::label) returned.
    pub fn template(&self, id: RouteId) -> &str {
        self.routes.get(id.0).map_or("", |r| r.template.as_str())
    }

    /// The policy of the route `path` matches, or the prefix rule's.
    pub fn policy(&self, matched: Option<RouteId>, path: &str) -> RoutePolicy {
        matched
            .and_then(|id| self.routes.get(id.0))
            .map_or_else(|| RoutePolicy::unmatched(path), |r| r.policy)
    }

    /// Every registered template, in registration order.
    pub fn templates(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.template.as_str())
    }

    /// The templates whose 5xx rate raises an alert, for monitoring (which
    /// knows routes only by their labels).
    pub fn critical_templates(&self) -> HashSet<String> {
        self.routes
            .iter()
            .filter(|r| r.policy.critical)
            .map(|r| r.template.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(labels: &RouteLabels, path: &str) -> String {
        labels
            .label(path)
            .map_or("none".into(), |id| labels.template(id).to_owned())
    }

    #[test]
    fn paths_get_their_template_and_unknown_paths_one_label() {
        let mut labels = RouteLabels::default();
        labels.add("/", RoutePolicy::PAGE);
        labels.add("/assets/{name}", RoutePolicy::PAGE);
        labels.add("/api/health/{component}", RoutePolicy::API);
        labels.add("/sandbox/{*path}", RoutePolicy::PAGE);
        labels.add("/", RoutePolicy::PAGE);
        assert_eq!(label(&labels, "/"), "/");
        assert_eq!(label(&labels, "/assets/app.css"), "/assets/{name}");
        assert_eq!(
            label(&labels, "/api/health/database"),
            "/api/health/{component}"
        );
        assert_eq!(label(&labels, "/sandbox/a/b/c"), "/sandbox/{*path}");
        assert_eq!(label(&labels, "/api/health/database/x"), "none");
        assert_eq!(label(&labels, "/nope"), "none");
        assert_eq!(label(&labels, ""), "none");
        assert_eq!(labels.templates().count(), 4);
    }

    #[test]
    fn a_matched_route_has_its_own_policy_and_others_the_prefix_rule() {
        let mut labels = RouteLabels::default();
        let probe = RoutePolicy::API.shed_exempt().light();
        labels.add("/livez", probe);
        labels.add("/api/auth/login", RoutePolicy::API.critical());
        let policy = |path: &str| labels.policy(labels.label(path), path);
        assert_eq!(policy("/livez"), probe);
        assert!(policy("/api/auth/login").critical);
        assert_eq!(policy("/livez/"), RoutePolicy::PAGE);
        assert_eq!(policy("/api"), RoutePolicy::API);
        assert_eq!(policy("/api/x"), RoutePolicy::API);
        assert_eq!(policy("/apix"), RoutePolicy::PAGE);
        assert_eq!(policy("/foo"), RoutePolicy::PAGE);
        assert_eq!(
            labels.critical_templates(),
            HashSet::from(["/api/auth/login".to_owned()])
        );
    }
}
