//! PostgreSQL over TLS, against the local server whose certificate
//! `.ci/pg-tls.sh` had a throw-away CA sign (`HUNTAZE_TEST_PG_CA_FILE`):
//! with `sslmode=verify-full` every pooled connection is encrypted; a
//! certificate that does not verify (another CA, a name it does not carry, a
//! server without TLS) stops `serve` and `migrate` at once with a message
//! naming the settings, while a database that is merely down is still waited
//! for; a CA that changes under a running server makes the database
//! unhealthy with that message and requests 503, until it is put right.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, copy_bidirectional};
use tokio::net::{TcpListener, TcpStream};

use crate::support::pg::{self, PgTestDb, backends_and_encrypted, with_query};
use crate::support::proxy::{ChaosProxy, Mode};
use crate::support::tls::TestCa;
use crate::support::{Backend, TestApp, eventually, new_client};

const PASSWORD: &str = "correct horse battery staple";

/// The binary with no `HUNTAZE_*` setting inherited from the test's
/// environment, in development, with its own data directory.
fn huntaze(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_huntaze"));
    for (name, _) in std::env::vars() {
        if name.starts_with("HUNTAZE_") || name.starts_with("PGSSL") {
            cmd.env_remove(name);
        }
    }
    cmd.env("HUNTAZE_LISTEN", "127.0.0.1:0")
        .env("HUNTAZE_DATA_DIR", data_dir)
        .env("RUST_LOG", "info");
    cmd
}

/// Runs `cmd` to its exit; fails if it is still running after `limit`.
fn run_to_exit(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huntaze");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// A password the URL carries, which no message may repeat (trust
/// authentication ignores it).
const URL_PASSWORD: &str = "pw-never-printed-7d1f";

fn with_password(url: &str) -> String {
    let mut url = url::Url::parse(url).expect("pg url");
    url.set_password(Some(URL_PASSWORD)).expect("password");
    url.to_string()
}

/// `url` reaching PostgreSQL at `addr` instead.
fn via(url: &str, addr: SocketAddr) -> String {
    let mut url = url::Url::parse(url).expect("pg url");
    url.set_host(Some(&addr.ip().to_string())).expect("host");
    url.set_port(Some(addr.port())).expect("port");
    url.to_string()
}

/// Where the local PostgreSQL listens.
async fn pg_addr() -> SocketAddr {
    let url = url::Url::parse(&pg::admin_url()).expect("admin url");
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    tokio::net::lookup_host((host.as_str(), url.port().unwrap_or(5432)))
        .await
        .expect("resolve pg")
        .next()
        .expect("pg address")
}

/// Forwards connections from another loopback address to PostgreSQL: the
/// same server, reached under a name its certificate does not carry.
async fn forward_from(ip: &str) -> SocketAddr {
    let upstream = pg_addr().await;
    let listener = TcpListener::bind((ip, 0)).await.expect("bind forwarder");
    let addr = listener.local_addr().expect("forwarder address");
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

fn verify(url: &str, mode: &str, ca: &Path) -> String {
    with_query(
        url,
        &[
            ("sslmode", mode),
            ("sslrootcert", &ca.display().to_string()),
        ],
    )
}

/// Until this database has at least `n` server connections: (all, encrypted).
async fn backends_at_least(database: &str, n: i64) -> (i64, i64) {
    let seen = Mutex::new((0, 0));
    let reached = eventually(Duration::from_secs(20), || async {
        let now = backends_and_encrypted(database).await;
        *seen.lock().unwrap() = now;
        now.0 >= n
    })
    .await;
    let seen = *seen.lock().unwrap();
    assert!(reached, "fewer than {n} connections: {seen:?}");
    seen
}

/// Waits until the database component's latest sample satisfies `want`;
/// fails with the last one seen.
async fn database_health_until(app: &TestApp, want: impl Fn(&Value) -> bool) {
    let last = Mutex::new(Value::Null);
    let reached = eventually(Duration::from_secs(20), || async {
        let body = database_health(app).await;
        let ok = want(&body);
        *last.lock().unwrap() = body;
        ok
    })
    .await;
    assert!(reached, "{}", last.lock().unwrap());
}

/// Registrations and sign-ins at once, so the pool opens several
/// connections; each must succeed.
async fn concurrent_sign_ups(app: &TestApp, n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (base, client) = (app.base.clone(), new_client());
        tasks.push(tokio::spawn(async move {
            let email = format!("tls{i}@example.com");
            let body = json!({ "email": email, "password": PASSWORD });
            let res = client
                .post(format!("{base}/api/auth/register"))
                .json(&body)
                .send()
                .await
                .expect("register");
            assert_eq!(res.status(), 201, "{:?}", res.text().await);
            let res = new_client()
                .post(format!("{base}/api/auth/login"))
                .json(&body)
                .send()
                .await
                .expect("login");
            assert_eq!(res.status(), 200, "{:?}", res.text().await);
        }));
    }
    for t in tasks {
        t.await.expect("sign-up task");
    }
}

async fn database_health(app: &TestApp) -> Value {
    app.client
        .get(app.url("/api/health/database"))
        .bearer_auth("t")
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_full_encrypts_every_pooled_connection() {
    let Some(ca) = pg::tls_ca("pg_tls::verify_full_encrypts_every_pooled_connection").await else {
        return;
    };
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .config(move |c| {
            let url = c.database_url();
            c.database.url = Some(verify(&url, "verify-full", &ca).into());
            c.database.min_connections = 3;
            c.database.max_connections = 6;
        })
        .spawn()
        .await;
    let name = app.pg.as_ref().expect("pg").name.clone();
    concurrent_sign_ups(&app, 8).await;
    let (all, encrypted) = backends_at_least(&name, 3).await;
    assert_eq!(encrypted, all, "every connection of the pool is encrypted");
    // The same, seen from a connection of the pool itself.
    let (ssl, version): (i64, String) = sqlx::query_as(
        "SELECT CASE WHEN ssl THEN 1 ELSE 0 END::bigint, COALESCE(version, '') \
         FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(app.state.db.pool())
    .await
    .expect("own pg_stat_ssl row");
    assert_eq!(ssl, 1);
    eprintln!("pool: {all} connections, all encrypted ({version})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_disable_stays_plain() {
    if !pg::available("pg_tls::sslmode_disable_stays_plain").await {
        return;
    }
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .config(|c| {
            let url = c.database_url();
            c.database.url = Some(with_query(&url, &[("sslmode", "disable")]).into());
        })
        .spawn()
        .await;
    let name = app.pg.as_ref().expect("pg").name.clone();
    concurrent_sign_ups(&app, 2).await;
    let (all, encrypted) = backends_at_least(&name, 1).await;
    assert_eq!(encrypted, 0, "{all} connections, none encrypted");
}

#[test]
fn a_ca_that_did_not_sign_the_certificate_stops_serve_and_migrate_at_once() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let test = "pg_tls::a_ca_that_did_not_sign_the_certificate_stops_serve_and_migrate_at_once";
    let Some(_) = rt.block_on(pg::tls_ca(test)) else {
        return;
    };
    if !crate::support::tls::available(test) {
        return;
    }
    let db = rt.block_on(PgTestDb::create());
    let other = TestCa::new("not the database's CA");
    let url = verify(&with_password(&db.url), "verify-full", &other.cert);
    let data = tempfile::tempdir().expect("temp dir");
    for command in ["serve", "migrate"] {
        // An acquire timeout far past the hang guard: exiting at all shows
        // the failure was not waited out.
        let out = run_to_exit(
            huntaze(data.path())
                .arg(command)
                .env("HUNTAZE_DATABASE_URL", &url)
                .env("HUNTAZE_DB_ACQUIRE_TIMEOUT_MS", "120000"),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "TLS to the database failed (HUNTAZE_DATABASE_URL sslmode=verify-full, \
                 sslrootcert={})",
                other.cert.display()
            )),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("UnknownIssuer"), "{command}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stderr.contains(URL_PASSWORD) && !stdout.contains(URL_PASSWORD),
            "{command}: the password was printed"
        );
        assert!(
            !stdout.contains("huntaze ready to serve"),
            "{command}: {stdout}"
        );
    }
    // check-config makes no connection: the settings themselves are sound.
    let out = run_to_exit(
        huntaze(data.path())
            .arg("check-config")
            .env("HUNTAZE_DATABASE_URL", &url),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // …but it reads the CA file, as start-up does.
    let missing = verify(&db.url, "verify-full", &data.path().join("no-such-ca.pem"));
    for command in ["check-config", "serve"] {
        let out = run_to_exit(
            huntaze(data.path())
                .arg(command)
                .env("HUNTAZE_DATABASE_URL", &missing),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("HUNTAZE_DATABASE_URL: sslrootcert ")
                && stderr.contains("no-such-ca.pem cannot be read"),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_name_the_certificate_lacks_and_verify_ca_accepts_it() {
    let test = "pg_tls::verify_full_refuses_a_name_the_certificate_lacks_and_verify_ca_accepts_it";
    let Some(ca) = pg::tls_ca(test).await else {
        return;
    };
    // The certificate names localhost and 127.0.0.1; the whole of
    // 127.0.0.0/8 is loopback on Linux.
    let other_name = forward_from("127.0.0.2").await;
    let db = PgTestDb::create().await;
    let data = tempfile::tempdir().expect("temp dir");
    let url = verify(&via(&db.url, other_name), "verify-full", &ca);
    let out = tokio::task::spawn_blocking(move || {
        run_to_exit(
            huntaze(data.path())
                .arg("serve")
                .env("HUNTAZE_DATABASE_URL", &url)
                .env("HUNTAZE_DB_ACQUIRE_TIMEOUT_MS", "120000"),
            Duration::from_secs(60),
        )
    })
    .await
    .expect("serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sslmode=verify-full") && stderr.contains("not valid for name"),
        "{stderr}"
    );
    drop(db);

    // verify-ca checks the CA, not the name.
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .config(move |c| {
            let url = via(&c.database_url(), other_name);
            c.database.url = Some(verify(&url, "verify-ca", &ca).into());
        })
        .spawn()
        .await;
    let name = app.pg.as_ref().expect("pg").name.clone();
    concurrent_sign_ups(&app, 2).await;
    let (all, encrypted) = backends_at_least(&name, 1).await;
    assert_eq!(encrypted, all);
}

#[test]
fn a_server_without_tls_is_refused_under_require_not_used_in_plain() {
    // A server that answers PostgreSQL's TLS request with "N" (no TLS), as
    // one with `ssl = off` does, and would then speak plain.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("address");
    let asked_for_plain = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let plain = std::sync::Arc::clone(&asked_for_plain);
    rt.spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let plain = std::sync::Arc::clone(&plain);
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if conn.read_exact(&mut request).await.is_err() {
                    return;
                }
                // SSLRequest: length 8, code 80877103.
                if request == [0, 0, 0, 8, 4, 210, 22, 47] {
                    let _ = conn.write_all(b"N").await;
                    let mut more = [0u8; 1];
                    if matches!(conn.read(&mut more).await, Ok(n) if n > 0) {
                        // A start-up message in plain text.
                        plain.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let data = tempfile::tempdir().expect("temp dir");
    let url = format!("postgres://postgres:{URL_PASSWORD}@{addr}/test?sslmode=require");
    for command in ["serve", "migrate"] {
        let out = run_to_exit(
            huntaze(data.path())
                .arg(command)
                .env("HUNTAZE_DATABASE_URL", &url)
                .env("HUNTAZE_DB_ACQUIRE_TIMEOUT_MS", "120000"),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("TLS to the database failed (HUNTAZE_DATABASE_URL sslmode=require)")
                && stderr.contains("server does not support TLS"),
            "{command}: {stderr}"
        );
        assert!(!stderr.contains(URL_PASSWORD), "{command}: {stderr}");
    }
    assert_eq!(
        asked_for_plain.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was sent in plain text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_at_start_is_waited_for_under_verify_full() {
    let Some(ca) =
        pg::tls_ca("pg_tls::a_database_down_at_start_is_waited_for_under_verify_full").await
    else {
        return;
    };
    let db = PgTestDb::create().await;
    let proxy = ChaosProxy::start(pg_addr().await).await;
    proxy.set(Mode::Refuse);
    let proxied = format!("127.0.0.1:{}", proxy.port).parse().expect("addr");
    let url = verify(&via(&db.url, proxied), "verify-full", &ca);
    let app = TestApp::builder()
        .config(move |c| {
            c.database.url = Some(url.into());
            c.monitoring.token = Some("t".to_owned().into());
        })
        .spawn()
        .await;
    let body = database_health(&app).await;
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["message"], "database unreachable", "{body}");
    assert!(!app.state.db.is_migrated());

    proxy.set(Mode::Pass);
    let migrated = eventually(Duration::from_secs(30), || async {
        app.state.db.is_migrated()
    })
    .await;
    assert!(migrated, "migrations applied once the database came back");
    concurrent_sign_ups(&app, 1).await;
    drop(app);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_changed_under_a_running_server_is_unhealthy_and_answers_503_until_put_back() {
    let test =
        "pg_tls::a_ca_changed_under_a_running_server_is_unhealthy_and_answers_503_until_put_back";
    let Some(ca) = pg::tls_ca(test).await else {
        return;
    };
    if !crate::support::tls::available(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let trusted = dir.path().join("ca.pem");
    std::fs::copy(&ca, &trusted).expect("copy CA");
    let url_ca = trusted.clone();
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .config(move |c| {
            let url = c.database_url();
            c.database.url = Some(verify(&url, "verify-full", &url_ca).into());
            c.database.min_connections = 0;
            c.monitoring.token = Some("t".to_owned().into());
        })
        .spawn()
        .await;
    concurrent_sign_ups(&app, 1).await;

    // The operator replaces the CA file with one that did not sign the
    // server's certificate, and the connections open now end.
    let other = TestCa::new("a CA the database does not use");
    std::fs::copy(&other.cert, &trusted).expect("replace CA");
    app.pg.as_ref().expect("pg").terminate_connections().await;

    let expected = format!(
        "TLS to the database failed (HUNTAZE_DATABASE_URL sslmode=verify-full, sslrootcert={})",
        trusted.display()
    );
    database_health_until(&app, |body| {
        body["status"] == "unhealthy"
            && body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&expected) && m.contains("UnknownIssuer"))
    })
    .await;
    let res = new_client()
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": "during@example.com", "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), 503, "{:?}", res.text().await);
    assert_eq!(app.get("/readyz").await.status(), 503);

    // Put right, without a restart.
    std::fs::copy(&ca, &trusted).expect("restore CA");
    database_health_until(&app, |body| body["status"] == "healthy").await;
    let res = new_client()
        .post(app.url("/api/auth/register"))
        .json(&json!({ "email": "after@example.com", "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
}
