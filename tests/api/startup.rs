//! Start-up against a database it cannot use, through the real binary: an
//! error that names the path and the operation, and a non-zero exit, when
//! the database cannot be opened at all; a damaged SQLite file named once
//! (not once per attempt) while the server waits for it, and taken up again
//! when it is repaired.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::binary::Running;

/// The binary with no `HUNTAZE_*` setting inherited from the test's
/// environment.
fn huntaze() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_huntaze"));
    for (name, _) in std::env::vars() {
        if name.starts_with("HUNTAZE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("HUNTAZE_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info");
    cmd
}

/// Production with its secrets set, so that only the database decides.
fn production(cmd: &mut Command) -> &mut Command {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    cmd.env("HUNTAZE_ENV", "production")
        .env("HUNTAZE_SECRET_KEY", &key)
        .env("HUNTAZE_ENCRYPTION_KEY", &key)
}

/// Runs `cmd` to its exit, killing it (and failing) after 30 s.
fn run_to_exit(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huntaze");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after 30 s; stdout:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn a_data_directory_that_cannot_be_created_is_named_and_stops_start_up() {
    // Tests run as root, for whom permissions rarely fail: a path under a
    // regular file cannot be a directory for anyone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data_dir = file.join("sub");
    let out = run_to_exit(huntaze().env("HUNTAZE_DATA_DIR", &data_dir));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{:?}\n{stderr}", out.status);
    assert!(
        stderr.contains(&format!(
            "creating the data directory {}",
            data_dir.display()
        )),
        "names the operation and the path: {stderr}"
    );
}

#[test]
fn a_sqlite_database_that_cannot_be_opened_stops_start_up_in_production() {
    let dir = tempfile::tempdir().unwrap();
    // A database path whose directory cannot exist…
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let db_dir = file.join("sub");
    let out = run_to_exit(
        production(&mut huntaze())
            .env("HUNTAZE_DATA_DIR", dir.path().join("data"))
            .env(
                "HUNTAZE_DATABASE_URL",
                format!("sqlite://{}/huntaze.db", db_dir.display()),
            ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{:?}\n{stderr}", out.status);
    assert!(
        stderr.contains(&format!(
            "creating the database directory {}",
            db_dir.display()
        )),
        "{stderr}"
    );
    // …and one that SQLite cannot open (a directory where the file should be).
    let db = dir.path().join("a-directory");
    std::fs::create_dir(&db).unwrap();
    let out = run_to_exit(
        production(&mut huntaze())
            .env("HUNTAZE_DATA_DIR", dir.path().join("data"))
            .env("HUNTAZE_DATABASE_URL", format!("sqlite://{}", db.display())),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{:?}\n{stderr}", out.status);
    assert!(
        stderr.contains(&format!("opening the SQLite database {}", db.display()))
            && stderr.contains("unable to open database file"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("ready to serve"), "{stdout}");
}

#[test]
fn a_corrupted_sqlite_file_is_named_once_and_taken_up_again_when_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("huntaze.db");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, noise).unwrap();
    let mut server = Running::start(
        huntaze()
            .env("HUNTAZE_DATA_DIR", dir.path())
            .env("HUNTAZE_HEALTH_INTERVAL_MS", "200"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "a damaged database is waited for, not fatal"
    );
    let lines = server.lines();
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    let named = lines
        .iter()
        .filter(|l| l.contains(&db.display().to_string()) && l.contains("file is not a database"))
        .count();
    assert!(
        named >= 1,
        "names the file and the cause:\n{}",
        lines.join("\n")
    );
    assert!(
        errors.len() <= 3,
        "one line per change of state, not per attempt ({} ERROR lines in 3 s):\n{}",
        errors.len(),
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains("pool timed out")),
        "the cause, not the pool's symptom:\n{}",
        lines.join("\n")
    );

    // Repaired (here: removed, so SQLite creates a fresh file): migrations
    // apply without a restart.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    assert!(
        server.wait_for(Duration::from_secs(30), "migrations applied after retry"),
        "{}",
        server.lines().join("\n")
    );
    assert!(
        server
            .lines()
            .iter()
            .any(|l| l.contains("database usable again"))
    );
    let _ = server.child.kill();
}

/// The data directory the server creates holds the SQLite database
/// (password hashes, sealed tokens) and the development secrets: only its
/// owner may read it.
#[tokio::test]
async fn the_data_directory_the_server_creates_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("fresh").join("data");
    let app = crate::support::TestApp::builder()
        .config({
            let dir = dir.clone();
            move |c| {
                c.data_dir = dir.clone();
                c.database.url = None;
            }
        })
        .spawn()
        .await;
    assert_eq!(app.get("/api/health").await.status(), 200);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
}
