//! Start-up validation and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use huntaze::{Config, Environment};

use crate::support::TestApp;

#[tokio::test]
async fn production_refuses_to_start_without_secrets_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        env: Environment::Production,
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
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
        .config(|c| c.server.shutdown_drain_ms = 600)
        .spawn()
        .await;
    let slow = {
        let c = app.client.clone();
        let url = app.url("/api/test/sleep?ms=1200");
        tokio::spawn(async move {
            let res = c.get(url).send().await.unwrap();
            let close = res
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            (res.status(), close, res.text().await.unwrap())
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

    let (status, close, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slept");
    assert!(
        close,
        "an answer given while draining closes its connection"
    );
    app.stop().await;
    assert!(
        reqwest::get(app.url("/livez")).await.is_err(),
        "the listener is closed after shutdown"
    );
}

/// One response read off a raw HTTP/1.1 connection.
struct RawResponse {
    status: u16,
    /// The server said `Connection: close`.
    close: bool,
}

/// One request and its response over a kept-alive socket, as a load
/// generator does it: an error after the request was written is a request
/// the server took and never answered.
async fn exchange(tcp: &mut tokio::net::TcpStream, path: &str) -> Result<RawResponse, Exchange> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .map_err(|_| Exchange::NotSent)?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Exchange::Lost),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            .map(str::to_owned)
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("the probes answer with a length");
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Exchange::Lost),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(RawResponse {
        status,
        close: header("connection").is_some_and(|v| v == "close"),
    })
}

#[derive(Debug, PartialEq)]
enum Exchange {
    /// The connection was already gone when the request was written.
    NotSent,
    /// Written, and no complete response came back.
    Lost,
}

#[derive(Default, Debug)]
struct ClientTally {
    answered: u32,
    lost: u32,
    /// Answers to requests sent well after the trigger that kept the
    /// connection open.
    kept_open_while_draining: u32,
    /// Connections opened after the trigger (each answer closed the last).
    reconnects_while_draining: u32,
    answered_after_trigger: u32,
}

#[tokio::test]
async fn shutdown_answers_every_request_of_keep_alive_clients() {
    let drain = Duration::from_millis(1_000);
    let mut app = TestApp::builder()
        .config(move |c| c.server.shutdown_drain_ms = drain.as_millis() as u64)
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let triggered: Arc<std::sync::OnceLock<std::time::Instant>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            let triggered = Arc::clone(&triggered);
            tokio::spawn(async move {
                let mut tally = ClientTally::default();
                let mut conn: Option<tokio::net::TcpStream> = None;
                let give_up = std::time::Instant::now() + Duration::from_secs(20);
                while std::time::Instant::now() < give_up {
                    let tcp = match conn.as_mut() {
                        Some(tcp) => tcp,
                        // Refused: the listener is closed, the server is done.
                        None => match tokio::net::TcpStream::connect(&addr).await {
                            Ok(tcp) => {
                                if triggered.get().is_some() {
                                    tally.reconnects_while_draining += 1;
                                }
                                conn.insert(tcp)
                            }
                            Err(_) => break,
                        },
                    };
                    let sent = std::time::Instant::now();
                    match exchange(tcp, "/livez").await {
                        Ok(res) => {
                            assert_eq!(res.status, 200);
                            tally.answered += 1;
                            if let Some(t) = triggered.get() {
                                tally.answered_after_trigger += 1;
                                if !res.close && sent > *t + Duration::from_millis(100) {
                                    tally.kept_open_while_draining += 1;
                                }
                            }
                            if res.close {
                                conn = None;
                            }
                        }
                        Err(Exchange::NotSent) => conn = None,
                        Err(Exchange::Lost) => {
                            tally.lost += 1;
                            conn = None;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    triggered.get_or_init(std::time::Instant::now);
    app.shutdown.trigger();
    let mut tallies = Vec::new();
    for c in clients {
        tallies.push(c.await.unwrap());
    }
    app.stop().await;
    let lost: u32 = tallies.iter().map(|t| t.lost).sum();
    assert_eq!(lost, 0, "requests taken and never answered: {tallies:#?}");
    for t in &tallies {
        assert!(t.answered_after_trigger > 0, "{tallies:#?}");
        assert!(t.reconnects_while_draining > 0, "{tallies:#?}");
        assert_eq!(
            t.kept_open_while_draining, 0,
            "answers while draining say Connection: close: {tallies:#?}"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_when_the_drain_ends() {
    use tokio::io::AsyncReadExt;
    let drain = Duration::from_millis(500);
    let mut app = TestApp::builder()
        .config(move |c| c.server.shutdown_drain_ms = drain.as_millis() as u64)
        .spawn()
        .await;
    let mut tcp = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let res = exchange(&mut tcp, "/livez").await.unwrap();
    assert!(!res.close, "kept alive before the shutdown");
    let triggered = std::time::Instant::now();
    app.shutdown.trigger();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(drain + Duration::from_secs(5), tcp.read(&mut byte))
        .await
        .expect("the server closes an idle connection once the drain is over");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        triggered.elapsed() >= drain - Duration::from_millis(20),
        "open through the drain: {:?}",
        triggered.elapsed()
    );
    app.stop().await;
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

/// `huntaze migrate` against a PostgreSQL database another process keeps
/// busy (here: its migration table locked for longer than the statement
/// timeout, as another instance migrating would keep it) waits its turn
/// and succeeds: a migration is not bounded by the statement timeout that
/// bounds a request's queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_for_a_busy_database_beyond_the_statement_timeout() {
    use sqlx::{Connection, Executor};
    if !crate::support::pg::available("migrate_waits_for_a_busy_database").await {
        return;
    }
    let db = crate::support::pg::PgTestDb::create().await;
    let migrate = |db_url: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_huntaze"))
                .arg("migrate")
                .env("HUNTAZE_DATABASE_URL", db_url)
                .env("HUNTAZE_DB_STATEMENT_TIMEOUT_MS", "300")
                .env("HUNTAZE_DB_ACQUIRE_TIMEOUT_MS", "30000")
                .output()
                .unwrap()
        })
    };
    let first = migrate(db.url.clone()).await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let second = migrate(db.url.clone());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    holder.execute("COMMIT").await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("migrate ends once the lock is given up")
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}
