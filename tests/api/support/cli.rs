//! `huntaze create-admin`, the real binary, run against a test server's
//! database the way an operator would: its own process, only the variables
//! given here (no inherited `HUNTAZE_*`), the password on standard input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::TestApp;

/// `huntaze create-admin --email EMAIL --password-stdin [--promote]` on
/// `app`'s database (and its data directory), plus `env`.
pub async fn create_admin(
    app: &TestApp,
    env: &[(&str, &str)],
    email: &str,
    password: &str,
    promote: bool,
) -> Output {
    let mut vars: Vec<(String, String)> = vec![
        (
            "HUNTAZE_DATA_DIR".into(),
            app.data_dir.path().display().to_string(),
        ),
        ("RUST_LOG".into(), "error".into()),
    ];
    if let Some(pg) = &app.pg {
        vars.push(("HUNTAZE_DATABASE_URL".into(), pg.url.clone()));
    }
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let mut args = vec![
        "create-admin".to_owned(),
        "--email".to_owned(),
        email.to_owned(),
        "--password-stdin".to_owned(),
    ];
    if promote {
        args.push("--promote".into());
    }
    let stdin = format!("{password}\n");
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_huntaze"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start huntaze create-admin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write the password");
        child.wait_with_output().expect("create-admin output")
    })
    .await
    .expect("create-admin task")
}

/// Whether standard output holds anything but JSON log lines.
pub fn stdout_has_human_text(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
}

/// `huntaze check-config` with only `env` (plus `PATH` and a data
/// directory), in `dir` as its working directory (no stray `huntaze.toml`).
pub fn check_config(dir: &std::path::Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_huntaze"))
        .arg("check-config")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HUNTAZE_DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run huntaze check-config")
}
