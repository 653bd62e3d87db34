//! Start-up validation and graceful shutdown.

use std::time::Duration;

use huntaze::config::{Config, Environment};

use crate::support::TestApp;

#[tokio::test]
async fn production_refuses_to_start_without_secrets_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        env: Environment::Production,
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let err = match huntaze::AppBuilder::new(config).build().await {
        Ok(_) => panic!("production must not start without secrets"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("HUNTAZE_SECRET_KEY"), "{err}");
    assert!(err.contains("HUNTAZE_ENCRYPTION_KEY"), "{err}");
}

#[tokio::test]
async fn graceful_shutdown_turns_readyz_503_and_lets_in_flight_requests_finish() {
    let mut app = TestApp::builder()
        .config(|c| c.shutdown_drain_ms = 600)
        .spawn()
        .await;
    let slow = {
        let c = app.client.clone();
        let url = app.url("/api/test/sleep?ms=1200");
        tokio::spawn(async move {
            let res = c.get(url).send().await.unwrap();
            (res.status(), res.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.status(),
        503,
        "draining instances leave the load balancer first"
    );
    assert_eq!(app.get("/livez").await.status(), 200, "but stay alive");

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slept");
    app.stop().await;
    assert!(
        reqwest::get(app.url("/livez")).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[test]
fn the_binary_exits_cleanly_on_sigterm() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_huntaze"))
        .env("HUNTAZE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HUNTAZE_DATA_DIR", dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let up = rt.block_on(crate::support::eventually(
        Duration::from_secs(30),
        || async { reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) },
    ));
    assert!(up, "the binary becomes ready with zero configuration");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn check_config_names_missing_production_secrets_and_fails() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huntaze"))
        .arg("check-config")
        .env("HUNTAZE_ENV", "production")
        .env("HUNTAZE_SECRET_KEY", "")
        .env_remove("HUNTAZE_SECRET_KEY")
        .env_remove("HUNTAZE_ENCRYPTION_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("HUNTAZE_SECRET_KEY") && text.contains("HUNTAZE_ENCRYPTION_KEY"),
        "{text}"
    );
}

#[test]
fn migrate_applies_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huntaze"))
        .arg("migrate")
        .env("HUNTAZE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("huntaze.db").exists());
}
