//! `/api/openapi.json` describes every `/api` route exactly: where each
//! parameter goes, every status a route can answer, the limits the server
//! enforces and how a caller authenticates. Tools (validators, fuzzers,
//! generated clients) read nothing else, so what they get wrong here they
//! get wrong everywhere.

use serde_json::Value;

use crate::support::TestApp;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document() -> Value {
    let app = TestApp::spawn().await;
    let res = app.get("/api/openapi.json").await;
    assert_eq!(res.status(), 200);
    res.json().await.expect("a JSON document")
}

/// Every operation: (method, path template, operation object).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                ops.push((m.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    assert!(!ops.is_empty());
    ops
}

fn parameter<'a>(op: &'a Value, name: &str) -> &'a Value {
    op["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no parameter {name} in {op}"))
}

/// A component schema, following one `$ref`.
fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "no schema {name}");
    s
}

fn statuses(op: &Value) -> Vec<String> {
    op["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_api_route() {
    let doc = document().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/health",
        "/api/health/{component}",
        "/api/openapi.json",
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/session",
        "/api/auth/sessions",
        "/api/auth/tiktok",
        "/api/auth/tiktok/callback",
        "/api/platforms/tiktok",
        "/api/admin/audit",
        "/api/monitoring/dashboard",
        "/api/monitoring/health-trends",
        "/api/monitoring/alerts",
        "/api/monitoring/scaling",
    ] {
        assert!(paths.contains_key(p), "missing {p}: {:?}", paths.keys());
    }
    assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());
    assert!(doc["components"]["schemas"]["HealthStatus"].is_object());
}

#[tokio::test]
async fn parameters_are_where_the_server_reads_them() {
    let doc = document().await;
    for (method, path, op) in operations(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or_default();
            let placeholder = format!("{{{name}}}");
            if p["in"] == "path" {
                assert!(
                    path.contains(&placeholder),
                    "{method} {path}: {name} is declared in: path but the template has no {placeholder}"
                );
                assert_eq!(p["required"], true, "{method} {path}: path {name}");
            }
        }
    }
    let audit = &doc["paths"]["/api/admin/audit"]["get"];
    for q in ["before", "limit"] {
        assert_eq!(parameter(audit, q)["in"], "query", "audit {q}");
    }
    let dash = &doc["paths"]["/api/monitoring/dashboard"]["get"];
    assert_eq!(parameter(dash, "range")["in"], "query");
    let trends = &doc["paths"]["/api/monitoring/health-trends"]["get"];
    for q in ["range", "component"] {
        assert_eq!(parameter(trends, q)["in"], "query", "health-trends {q}");
    }
}

#[tokio::test]
async fn every_response_has_a_description() {
    let doc = document().await;
    for (method, path, op) in operations(&doc) {
        for (status, res) in op["responses"].as_object().expect("responses") {
            let d = res["description"].as_str().unwrap_or_default();
            assert!(
                !d.trim().is_empty(),
                "{method} {path} {status} has no description"
            );
        }
    }
}

#[tokio::test]
async fn security_schemes_name_the_session_cookie_the_csrf_header_and_the_bearer_token() {
    let doc = document().await;
    let schemes = &doc["components"]["securitySchemes"];
    let cookie = &schemes["session_cookie"];
    assert_eq!(cookie["type"], "apiKey");
    assert_eq!(cookie["in"], "cookie");
    assert_eq!(cookie["name"], "huntaze_session");
    let csrf = &schemes["csrf_token"];
    assert_eq!(csrf["type"], "apiKey");
    assert_eq!(csrf["in"], "header");
    assert_eq!(csrf["name"], "X-CSRF-Token");
    let bearer = &schemes["monitoring_token"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");

    let security = |path: &str, method: &str| doc["paths"][path][method]["security"].clone();
    // State-changing calls need the cookie and the CSRF header together.
    for (path, method) in [
        ("/api/auth/logout", "post"),
        ("/api/auth/sessions", "delete"),
        ("/api/platforms/tiktok", "delete"),
    ] {
        assert_eq!(
            security(path, method),
            serde_json::json!([{ "session_cookie": [], "csrf_token": [] }]),
            "{method} {path}"
        );
    }
    for (path, method) in [
        ("/api/auth/session", "get"),
        ("/api/platforms/tiktok", "get"),
        ("/api/auth/tiktok", "get"),
        ("/api/admin/audit", "get"),
    ] {
        assert_eq!(
            security(path, method),
            serde_json::json!([{ "session_cookie": [] }]),
            "{method} {path}"
        );
    }
    // Machines use the bearer token, people an admin session: either one.
    for path in [
        "/api/monitoring/dashboard",
        "/api/monitoring/health-trends",
        "/api/monitoring/alerts",
        "/api/monitoring/scaling",
    ] {
        assert_eq!(
            security(path, "get"),
            serde_json::json!([{ "monitoring_token": [] }, { "session_cookie": [] }]),
            "{path}"
        );
    }
    // Anyone may call health; the token or an admin session adds details.
    assert_eq!(
        security("/api/health", "get"),
        serde_json::json!([{}, { "monitoring_token": [] }, { "session_cookie": [] }])
    );
    // Registering and signing in need nothing.
    for path in ["/api/auth/register", "/api/auth/login"] {
        let s = security(path, "post");
        assert!(s.is_null() || s == serde_json::json!([{}]), "{path}: {s}");
    }
}

#[tokio::test]
async fn every_route_declares_what_the_middleware_in_front_of_it_can_answer() {
    let doc = document().await;
    for (method, path, op) in operations(&doc) {
        let have = statuses(&op);
        // Overload (shedding), a database outage and the request deadline.
        for s in ["503", "504"] {
            assert!(
                have.contains(&s.into()),
                "{method} {path} lacks {s}: {have:?}"
            );
        }
        let shed = op["responses"]["503"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            shed.contains("SERVICE_UNAVAILABLE: overloaded"),
            "{method} {path}: 503 does not say it may be shedding: {shed}"
        );
        for s in ["429", "503"] {
            let res = &op["responses"][s];
            assert!(
                res.is_null() || res["headers"]["Retry-After"].is_object(),
                "{method} {path} {s} without Retry-After"
            );
        }
    }
    // Bodies: malformed JSON, too large, not JSON; state-changing requests
    // from another origin.
    for path in ["/api/auth/register", "/api/auth/login"] {
        let have = statuses(&doc["paths"][path]["post"]);
        for s in ["400", "403", "413", "415", "429", "503"] {
            assert!(have.contains(&s.into()), "POST {path} lacks {s}: {have:?}");
        }
    }
    // Admin and monitoring: anonymous 401, signed in without the role 403,
    // and parameters the server checks 400.
    for path in [
        "/api/admin/audit",
        "/api/monitoring/dashboard",
        "/api/monitoring/health-trends",
    ] {
        let have = statuses(&doc["paths"][path]["get"]);
        for s in ["400", "401", "403"] {
            assert!(have.contains(&s.into()), "GET {path} lacks {s}: {have:?}");
        }
    }
    // Starting a TikTok connection is rate-limited per user.
    let have = statuses(&doc["paths"]["/api/auth/tiktok"]["get"]);
    assert!(have.contains(&"429".into()), "{have:?}");
}

#[tokio::test]
async fn redirects_declare_their_location() {
    let doc = document().await;
    for path in ["/api/auth/tiktok", "/api/auth/tiktok/callback"] {
        let found = &doc["paths"][path]["get"]["responses"]["302"];
        assert!(
            found["headers"]["Location"].is_object(),
            "{path}: 302 without Location: {found}"
        );
    }
    // The callback answers every outcome with a redirect; only what the
    // middleware answers before it runs is anything else.
    let mut have = statuses(&doc["paths"]["/api/auth/tiktok/callback"]["get"]);
    have.sort();
    assert_eq!(have, ["302", "413", "500", "503", "504"]);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_as_declared_even_where_none_is_read() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    assert!(statuses(&doc["paths"]["/api/auth/session"]["get"]).contains(&"413".into()));
    let limit = app.state.config.server.body_limit_bytes;
    let res = app
        .client
        .get(app.url("/api/auth/session"))
        .body(vec![b'x'; limit + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn the_document_declares_the_limits_the_server_enforces() {
    use huntaze::{DISPLAY_NAME_MAX, EMAIL_MAX, LOGIN_PASSWORD_MAX, PASSWORD_MAX, PASSWORD_MIN};
    let doc = document().await;

    let register = schema(&doc, "RegisterBody");
    let password = &register["properties"]["password"];
    assert_eq!(password["minLength"], PASSWORD_MIN);
    assert_eq!(password["maxLength"], PASSWORD_MAX);
    let email = &register["properties"]["email"];
    assert_eq!(email["format"], "email");
    assert_eq!(email["maxLength"], EMAIL_MAX);
    // Trimmed by the server, so the length is in the pattern: a visible
    // character, then up to MAX - 2 more and a visible last one.
    let name = &register["properties"]["displayName"];
    let pattern = name["pattern"].as_str().unwrap_or_default();
    let middle = format!("{{0,{}}}", DISPLAY_NAME_MAX - 2);
    assert!(pattern.contains(&middle), "{pattern}");
    assert_eq!(register["additionalProperties"], false);

    let login = schema(&doc, "LoginBody");
    assert_eq!(
        login["properties"]["password"]["maxLength"],
        LOGIN_PASSWORD_MAX
    );
    assert_eq!(login["properties"]["password"]["minLength"], 1);

    let audit = &doc["paths"]["/api/admin/audit"]["get"];
    let limit = &parameter(audit, "limit")["schema"];
    assert_eq!(limit["minimum"], *huntaze::AUDIT_LIMITS.start());
    assert_eq!(limit["maximum"], *huntaze::AUDIT_LIMITS.end());

    let ranges: Vec<&str> = huntaze::Range::ALL.iter().map(|r| r.as_str()).collect();
    let dash = &doc["paths"]["/api/monitoring/dashboard"]["get"];
    assert_eq!(
        parameter(dash, "range")["schema"]["enum"],
        serde_json::json!(ranges)
    );
    let trends = &doc["paths"]["/api/monitoring/health-trends"]["get"];
    assert_eq!(
        parameter(trends, "component")["schema"]["enum"],
        serde_json::json!(huntaze::HEALTH_COMPONENTS)
    );
    let component = &doc["paths"]["/api/health/{component}"]["get"];
    assert_eq!(
        parameter(component, "component")["schema"]["enum"],
        serde_json::json!(huntaze::HEALTH_COMPONENTS)
    );
}
