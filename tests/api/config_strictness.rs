//! The configuration as an operator meets it: the real binary, run with only
//! the variables each test gives it (no inherited `HUNTAZE_*`), in an empty
//! working directory (no stray `huntaze.toml`). Every problem is an exit 1
//! with all problems on stderr, full names, and never a value.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::pg;

/// A value that must never be printed back.
const CANARY: &str = "canary-7f3a";

struct Run {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Run {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// Production with every required secret and the database written out.
    fn production() -> Self {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let run = Self::new();
        let db = format!("sqlite://{}/huntaze.db", run.dir.path().display());
        run.env("HUNTAZE_ENV", "production")
            .env("HUNTAZE_SECRET_KEY", &key)
            .env("HUNTAZE_ENCRYPTION_KEY", &key)
            .env("HUNTAZE_DATABASE_URL", &db)
    }

    fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Runs `huntaze ARGS` with `stdin`; a process still running after
    /// `deadline` (a server that started) is killed and its output returned
    /// with no exit code.
    fn run(&self, args: &[&str], stdin: &str, deadline: Duration) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_huntaze"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HUNTAZE_DATA_DIR", self.dir.path().join("data"))
            .env("HUNTAZE_LISTEN", "127.0.0.1:0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start huntaze");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let end = Instant::now() + deadline;
        while child.try_wait().unwrap().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }

    fn check_config(&self) -> Output {
        self.run(&["check-config"], "", Duration::from_secs(30))
    }

    /// `huntaze serve`, given a few seconds to refuse.
    fn serve(&self) -> Output {
        self.run(&["serve"], "", Duration::from_secs(10))
    }
}

/// The exit code and stderr; stdout must hold no human text.
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(!stderr.contains(CANARY), "a value was printed:\n{stderr}");
    assert!(!stdout_has_human_text(out), "{out:?}");
    stderr
}

fn stdout_has_human_text(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
}

#[test]
fn a_misspelt_database_url_in_production_stops_check_config_and_the_server() {
    let run = Run::production().env(
        "HUNTAZE_DATABSE_URL",
        &format!("postgres://u:{CANARY}@db.example/huntaze"),
    );
    for out in [run.check_config(), run.serve()] {
        let stderr = refused(&out);
        assert!(
            stderr.contains(
                "HUNTAZE_DATABSE_URL: is not a setting; did you mean HUNTAZE_DATABASE_URL?"
            ),
            "{stderr}"
        );
    }
    // The server refused before it created anything.
    assert!(!run.dir.path().join("data").exists());
}

#[test]
fn an_unknown_name_is_an_error_in_development_too() {
    let run = Run::new()
        .env("HUNTAZE_REQUEST_TIMEOUT", CANARY)
        .env("HUNTAZE_NO_SUCH_THING", CANARY);
    for out in [run.check_config(), run.serve()] {
        let stderr = refused(&out);
        assert!(
            stderr.contains(
                "HUNTAZE_REQUEST_TIMEOUT: is not a setting; did you mean HUNTAZE_REQUEST_TIMEOUT_MS?"
            ),
            "{stderr}"
        );
        assert!(
            stderr.contains("HUNTAZE_NO_SUCH_THING: is not a setting\n"),
            "{stderr}"
        );
    }
}

#[test]
fn the_test_harness_switches_are_known_names() {
    let run = Run::new()
        .env("HUNTAZE_TEST_REQUIRE_SERVICES", "1")
        .env("HUNTAZE_TEST_PG_URL", "postgres://127.0.0.1/x")
        .env("HUNTAZE_TEST_REDIS_URL", "redis://127.0.0.1")
        .env("HUNTAZE_TEST_PYTHON_VENV", "/opt/venv")
        .env("HUNTAZE_TRIM_PROBE", "1");
    let out = run.check_config();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration OK for development"));
}

#[test]
fn an_unknown_key_in_the_file_names_the_key_and_the_file() {
    let run = Run::new();
    let path = run.file(
        "huntaze.toml",
        &format!("listen = \"127.0.0.1:0\"\nmonitoring_tokn = \"{CANARY}\"\n"),
    );
    let run = run.env("HUNTAZE_CONFIG", &path);
    for out in [run.check_config(), run.serve()] {
        let stderr = refused(&out);
        assert!(
            stderr.contains(&format!(
                "`monitoring_tokn` in {path}: is not a setting; did you mean `monitoring_token`?"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn a_config_file_that_does_not_exist_is_an_error() {
    let run = Run::new();
    let missing = run.dir.path().join("nope.toml").display().to_string();
    let run = run.env("HUNTAZE_CONFIG", &missing);
    for out in [run.check_config(), run.serve()] {
        let stderr = refused(&out);
        assert!(
            stderr.contains(&format!(
                "HUNTAZE_CONFIG: names {missing}, which cannot be read"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("configuration OK"), "{stderr}");
    }
}

#[test]
fn every_value_of_the_wrong_type_is_reported_at_once_by_full_name() {
    let run = Run::new();
    let path = run.file(
        "huntaze.toml",
        &format!("db_max_connections = \"{CANARY}\"\n"),
    );
    let run = run
        .env("HUNTAZE_CONFIG", &path)
        .env("HUNTAZE_REQUEST_TIMEOUT_MS", CANARY)
        .env("HUNTAZE_METRICS_ENABLED", CANARY)
        .env("HUNTAZE_TIKTOK_CIRCUIT_FAILURE_RATE", "300")
        .env("HUNTAZE_ENV", CANARY);
    for out in [run.check_config(), run.serve()] {
        let stderr = refused(&out);
        for expected in [
            "HUNTAZE_REQUEST_TIMEOUT_MS: must be a whole number",
            "HUNTAZE_METRICS_ENABLED: must be true or false",
            "HUNTAZE_TIKTOK_CIRCUIT_FAILURE_RATE: must be a whole number from 0 to 255",
            "HUNTAZE_ENV: must be one of: development, production",
            &format!("`db_max_connections` in {path}: must be a whole number"),
        ] {
            assert!(stderr.contains(expected), "{expected:?} missing:\n{stderr}");
        }
    }
}

#[test]
fn an_alert_webhook_that_is_not_http_is_refused() {
    for url in ["ftp://x", "http://", "mailto:ops@example.com"] {
        let out = Run::new()
            .env("HUNTAZE_ALERT_WEBHOOK_URL", url)
            .check_config();
        let stderr = refused(&out);
        assert!(
            stderr.contains("HUNTAZE_ALERT_WEBHOOK_URL: must be an http:// or https:// URL"),
            "{url}: {stderr}"
        );
    }
    let out = Run::new()
        .env(
            "HUNTAZE_ALERT_WEBHOOK_URL",
            "https://alerts.example.com/huntaze",
        )
        .check_config();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn every_bad_trusted_proxy_is_reported_by_position() {
    let out = Run::new()
        .env(
            "HUNTAZE_TRUSTED_PROXIES",
            &format!("10.0.0.1,{CANARY},10.1.0.0/16,{CANARY}x"),
        )
        .check_config();
    let stderr = refused(&out);
    assert!(
        stderr.contains("HUNTAZE_TRUSTED_PROXIES: entry 2 is not an IP address or CIDR"),
        "{stderr}"
    );
    assert!(
        stderr.contains("HUNTAZE_TRUSTED_PROXIES: entry 4 is not an IP address or CIDR"),
        "{stderr}"
    );
}

#[test]
fn production_needs_the_database_url_written_out() {
    let mut run = Run::production();
    run.env.retain(|(k, _)| k != "HUNTAZE_DATABASE_URL");
    for out in [
        run.check_config(),
        run.serve(),
        run.run(&["migrate"], "", Duration::from_secs(30)),
    ] {
        let stderr = refused(&out);
        assert!(
            stderr.contains("HUNTAZE_DATABASE_URL: is required in production"),
            "{stderr}"
        );
    }
    assert!(!run.dir.path().join("data").exists(), "no local file made");

    // A SQLite file is fine when it is asked for.
    let out = Run::production().check_config();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("HUNTAZE_DATABASE_URL"), "{stderr}");
}

/// `migrate` and `create-admin`: stdout is the log stream (JSON lines only),
/// the human confirmation is on stderr.
fn assert_only_json_on_stdout_and_text_on_stderr(run: &Run, expected: &str) {
    let out = run.run(&["migrate"], "", Duration::from_secs(60));
    assert!(out.status.success(), "{out:?}");
    assert!(!stdout_has_human_text(&out), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("migrations applied on {expected}")),
        "{out:?}"
    );

    let out = run.run(
        &[
            "create-admin",
            "--email",
            "boss@example.com",
            "--password-stdin",
        ],
        &format!("{}\n", crate::support::PASSWORD),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(!stdout_has_human_text(&out), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("boss@example.com is an admin"),
        "{out:?}"
    );
}

#[test]
fn migrate_and_create_admin_keep_stdout_for_json_logs_on_sqlite() {
    let run = Run::new().env("RUST_LOG", "info");
    assert_only_json_on_stdout_and_text_on_stderr(&run, "sqlite");
}

#[tokio::test]
async fn migrate_and_create_admin_keep_stdout_for_json_logs_on_postgres() {
    if !pg::available("migrate_and_create_admin_keep_stdout_for_json_logs_on_postgres").await {
        return;
    }
    let db = pg::PgTestDb::create().await;
    let run = Run::new()
        .env("RUST_LOG", "info")
        .env("HUNTAZE_DATABASE_URL", &db.url);
    tokio::task::spawn_blocking(move || {
        assert_only_json_on_stdout_and_text_on_stderr(&run, "postgres")
    })
    .await
    .unwrap();
    drop(db);
}

#[test]
fn check_config_warns_that_metrics_are_closed_in_production_without_a_monitoring_token() {
    let out = Run::production().check_config();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning, not an error:\n{stderr}"
    );
    assert!(
        stderr.contains("warning: HUNTAZE_MONITORING_TOKEN: is not set: /metrics answers 404"),
        "{stderr}"
    );

    let out = Run::production()
        .env("HUNTAZE_MONITORING_TOKEN", CANARY)
        .check_config();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("HUNTAZE_MONITORING_TOKEN"), "{stderr}");
    assert!(!stderr.contains(CANARY), "{stderr}");

    // Development serves /metrics openly, as before: nothing to warn about.
    let out = Run::new().check_config();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("HUNTAZE_MONITORING_TOKEN"), "{stderr}");
}
