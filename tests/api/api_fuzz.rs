//! The served OpenAPI document checked by the tools that consume it:
//! openapi-spec-validator reads the document, and schemathesis fuzzes every
//! operation of the running server from it (examples, coverage, fuzzing and
//! the stateful phase along the document's links) with all of its checks:
//! no 5xx, only declared statuses, content types and headers, bodies that
//! match their schemas, invalid input refused and valid input accepted.
//! Anonymous, signed in and as an admin, on SQLite and on PostgreSQL.
//!
//! The tools are Python packages, installed (pinned) by `.ci/run` in a
//! virtual environment named by `HUNTAZE_TEST_PYTHON_VENV` (default
//! `target/ci-venv`). Without them these tests skip with a message, unless
//! `HUNTAZE_TEST_REQUIRE_SERVICES=1` (CI), where they fail.

use std::path::PathBuf;
use std::process::Output;
use std::time::Instant;

use crate::both_backends;
use crate::support::{Backend, PASSWORD, TestApp, new_client, pg::services_required};

/// Fixed, so a failure reproduces with the same requests.
const SEED: &str = "20261206";
/// Per operation and phase: enough to reach every constraint's edges, few
/// enough that each run takes seconds on a small machine.
const MAX_EXAMPLES: &str = "50";

/// The virtual environment's `bin` directory, or `None` (with the reason
/// printed) when the tools are not installed.
fn tools(test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("HUNTAZE_TEST_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv"));
    let bin = venv.join("bin");
    let present = ["openapi-spec-validator", "st"]
        .iter()
        .all(|t| bin.join(t).is_file());
    if present {
        return Some(bin);
    }
    let why = format!(
        "openapi-spec-validator and schemathesis are not installed in {} \
         (`.ci/run` installs them; or set HUNTAZE_TEST_PYTHON_VENV)",
        venv.display()
    );
    if services_required() {
        panic!("{test}: required (HUNTAZE_TEST_REQUIRE_SERVICES=1): {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

fn report(what: &str, out: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_passes_openapi_spec_validator() {
    let Some(bin) = tools("api_fuzz::the_served_document_passes_openapi_spec_validator") else {
        return;
    };
    let app = TestApp::spawn().await;
    let doc = app
        .get("/api/openapi.json")
        .await
        .bytes()
        .await
        .expect("the document");
    let file = app.data_dir.path().join("openapi.json");
    std::fs::write(&file, &doc).expect("write the document");
    let out = tokio::process::Command::new(bin.join("openapi-spec-validator"))
        .arg(&file)
        .output()
        .await
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "{}",
        report("openapi-spec-validator", &out)
    );
}

/// Who schemathesis is.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Anonymous,
    User,
    Admin,
}

/// Signs a new account in and returns the headers schemathesis sends on
/// every request: the session cookie and its CSRF token.
async fn sign_in(app: &TestApp, email: &str, admin: bool) -> Vec<String> {
    let client = new_client();
    let res = client
        .post(app.url("/api/auth/register"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), 201);
    let cookie = crate::support::session_cookie(&res).expect("a session cookie");
    let cookie = cookie.split(';').next().unwrap_or_default().to_owned();
    let body: serde_json::Value = res.json().await.expect("session body");
    let csrf = body["csrfToken"].as_str().expect("csrfToken").to_owned();
    if admin {
        app.promote(email).await;
    }
    vec![format!("Cookie: {cookie}"), format!("X-CSRF-Token: {csrf}")]
}

async fn fuzz(backend: Backend, caller: Caller) {
    let test = format!("api_fuzz::schemathesis {backend:?} {caller:?}");
    let Some(bin) = tools(&test) else {
        return;
    };
    let app = TestApp::builder()
        .backend(backend)
        .tiktok_sandbox()
        .spawn()
        .await;
    let started = Instant::now();
    let admin = match caller {
        Caller::Anonymous => {
            schemathesis(&test, &app, &bin, &[], &[]).await;
            None
        }
        Caller::User => Some(false),
        Caller::Admin => Some(true),
    };
    if let Some(admin) = admin {
        // Signing out ends the session every other request relies on: fuzz
        // the rest first, then each of those with a session of its own.
        // Every session is made before the fuzzer trips the per-address
        // registration limit.
        let headers = sign_in(&app, "fuzz@example.com", admin).await;
        let mut enders = Vec::new();
        for i in 0..SIGN_OUT.len() {
            enders.push(sign_in(&app, &format!("fuzz-{i}@example.com"), admin).await);
        }
        let rest: Vec<String> = SIGN_OUT
            .iter()
            .flat_map(|id| ["--exclude-operation-id".to_owned(), (*id).to_owned()])
            .collect();
        schemathesis(&test, &app, &bin, &headers, &rest).await;
        for (id, headers) in SIGN_OUT.iter().zip(&enders) {
            let only = [
                "--include-operation-id".to_owned(),
                (*id).to_owned(),
                // No links lead there: no stateful phase.
                "--phases".to_owned(),
                "coverage,fuzzing".to_owned(),
            ];
            schemathesis(&test, &app, &bin, headers, &only).await;
        }
    }
    eprintln!(
        "{test}: schemathesis took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The operations that end the caller's session.
const SIGN_OUT: [&str; 2] = ["logout", "revoke_all_sessions"];

async fn schemathesis(
    test: &str,
    app: &TestApp,
    bin: &std::path::Path,
    headers: &[String],
    filter: &[String],
) {
    let mut st = tokio::process::Command::new(bin.join("st"));
    st.arg("run")
        .arg(app.url("/api/openapi.json"))
        .args(["--checks", "all"])
        .args(["--seed", SEED])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .args(filter);
    if !headers.is_empty() {
        // Our session, not generated cookies and tokens in its place.
        st.args(["--generation-with-security-parameters", "false"]);
    }
    for h in headers {
        st.args(["--header", h]);
    }
    // Its report and cache stay in the test's temporary directory.
    st.current_dir(app.data_dir.path());
    let out = st.output().await.expect("run schemathesis");
    assert!(
        out.status.success(),
        "{test}: {}",
        report("schemathesis", &out)
    );
    // Its summary, for a run with --nocapture (what was covered, warnings).
    eprintln!("{test}:\n{}", String::from_utf8_lossy(&out.stdout));
}

both_backends! {
    async fn schemathesis_finds_nothing_anonymous(backend) {
        fuzz(backend, Caller::Anonymous).await;
    }

    async fn schemathesis_finds_nothing_signed_in(backend) {
        fuzz(backend, Caller::User).await;
    }

    async fn schemathesis_finds_nothing_as_admin(backend) {
        fuzz(backend, Caller::Admin).await;
    }
}

/// Checks each body against `RegisterBody` of the served document with the
/// JSON Schema validator the tools use; one line per body.
const SCHEMA_CHECK: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
doc = json.load(open(sys.argv[1]))
v = Draft202012Validator(doc["components"]["schemas"]["RegisterBody"],
                         format_checker=Draft202012Validator.FORMAT_CHECKER)
for line in sys.stdin:
    print("valid" if v.is_valid(json.loads(line)) else "invalid")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registration_schema_accepts_exactly_what_the_server_accepts() {
    let Some(bin) =
        tools("api_fuzz::the_registration_schema_accepts_exactly_what_the_server_accepts")
    else {
        return;
    };
    let app = TestApp::builder()
        .config(|c| c.accounts.register_per_ip_per_minute = 1_000)
        .spawn()
        .await;
    let ok = "correct horse";
    // (password, display name): the edges of each rule the server applies.
    let cases: Vec<(String, serde_json::Value)> = vec![
        (ok.into(), serde_json::Value::Null),
        (ok.into(), "".into()),
        (ok.into(), "   ".into()),
        (ok.into(), "\t Ana \n".into()),
        (ok.into(), "a".repeat(50).into()),
        (ok.into(), format!("  {}  ", "a".repeat(50)).into()),
        (ok.into(), "a".repeat(51).into()),
        (ok.into(), "Ana\u{7}".into()),
        (ok.into(), "A\u{85}na".into()),
        ("abcdefghi".into(), serde_json::Value::Null),
        ("abcdefghij".into(), serde_json::Value::Null),
        ("aaaaaaaaaaaa".into(), serde_json::Value::Null),
        ("日本語のパスワード十".into(), serde_json::Value::Null),
        ("x".repeat(127) + "y", serde_json::Value::Null),
        ("x".repeat(128) + "y", serde_json::Value::Null),
        ("tab\there123".into(), serde_json::Value::Null),
    ];
    let bodies: Vec<serde_json::Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (password, name))| {
            serde_json::json!({
                "email": format!("edge{i}@example.com"),
                "password": password,
                "displayName": name,
            })
        })
        .collect();

    let doc = app
        .get("/api/openapi.json")
        .await
        .bytes()
        .await
        .expect("document");
    let file = app.data_dir.path().join("openapi.json");
    std::fs::write(&file, &doc).expect("write the document");
    let mut python = tokio::process::Command::new(bin.join("python"));
    python
        .args(["-c", SCHEMA_CHECK])
        .arg(&file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = python.spawn().expect("run python");
    let input: String = bodies.iter().map(|b| format!("{b}\n")).collect();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write bodies");
    }
    let out = child.wait_with_output().await.expect("python output");
    assert!(out.status.success(), "{}", report("the schema check", &out));
    let verdicts: Vec<bool> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l == "valid")
        .collect();
    assert_eq!(verdicts.len(), bodies.len());

    for (body, schema_valid) in bodies.iter().zip(verdicts) {
        let res = new_client()
            .post(app.url("/api/auth/register"))
            .json(body)
            .send()
            .await
            .expect("register");
        let status = res.status().as_u16();
        assert!(
            status == 201 || status == 400,
            "{body}: unexpected {status}"
        );
        assert_eq!(
            schema_valid,
            status == 201,
            "{body}: the document says {}, the server answered {status}",
            if schema_valid { "valid" } else { "invalid" }
        );
    }
}
