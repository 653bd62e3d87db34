//! Route templates, looked up by path, for the metrics' `http_route` label.
//!
//! Requests that match none are labelled
//! [`UNMATCHED`](crate::monitoring::metrics::UNMATCHED) by the pipeline.
//!
//! The request pipeline wraps the whole router once instead of being layered
//! onto every route: axum's per-route layering boxes and clones one more
//! service and boxes one more future on every request (~2.5k instructions of
//! the landing page's ~27k). Outside the router, axum's
//! `MatchedPath` is not there yet, so the pipeline asks this table, built
//! from the very registrations that route (see [`super::router`]), with the
//! same matcher axum uses (matchit 0.8, same `{param}` / `{*rest}` syntax).

/// A registered template, by its position: what the pipeline keeps while
/// the request runs. An index rather than a shared `Arc<str>`, whose count
/// every request of both workers would bump on the same cache line (the
/// landing page's template is the same for all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteId(usize);

#[derive(Default)]
pub struct RouteLabels {
    matcher: matchit::Router<RouteId>,
    templates: Vec<String>,
}

impl RouteLabels {
    /// Adds a route template; registering the same one twice is a no-op.
    ///
    /// # Panics
    /// On a template axum itself would refuse (a conflict with another
    /// one): routes are fixed at build time, so this is a programming error
    /// caught by every test that builds the app, like axum's own panic.
    pub fn add(&mut self, template: &str) {
        if self.templates.iter().any(|t| &**t == template) {
            return;
        }
        let id = RouteId(self.templates.len());
        if let Err(e) = self.matcher.insert(template, id) {
            panic!("route template {template:?} rejected: {e}");
        }
        self.templates.push(template.to_owned());
    }

    /// Adds every template of `other`.
    pub fn extend(&mut self, other: &RouteLabels) {
        for template in other.templates() {
            self.add(template);
        }
    }

    /// The template `path` matches, if any.
    pub fn label(&self, path: &str) -> Option<RouteId> {
        self.matcher.at(path).ok().map(|m| *m.value)
    }

    /// The text of a template [`label`](Self::label) returned.
    pub fn template(&self, id: RouteId) -> &str {
        self.templates.get(id.0).map_or("", String::as_str)
    }

    /// Every registered template, in registration order.
    pub fn templates(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(String::as_str)
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
        labels.add("/");
        labels.add("/assets/{name}");
        labels.add("/api/health/{component}");
        labels.add("/sandbox/{*path}");
        labels.add("/");
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
}
