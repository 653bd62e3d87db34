//! Replacing the serving certificate while the server runs (SIGHUP, or
//! the same reload from code): new handshakes get the new pair, open
//! connections are untouched, and a pair that cannot serve leaves the
//! current one in place with an error in the log. Also the binary: a real
//! `kill -HUP`, and a bad pair at start-up.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Version;

use crate::support::binary::Running;
use crate::support::tls::{self, Leaf, Pair, TestCa};
use crate::support::{TestApp, logs};

/// The files the server reads, in a directory of their own, so a test can
/// put another pair in their place.
struct Served {
    _dir: tempfile::TempDir,
    pair: Pair,
}

impl Served {
    fn new(initial: &Pair) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pair = Pair {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let served = Self { _dir: dir, pair };
        served.put(&initial.cert, &initial.key);
        served
    }

    fn put(&self, cert: &Path, key: &Path) {
        std::fs::copy(cert, &self.pair.cert).unwrap();
        std::fs::copy(key, &self.pair.key).unwrap();
    }
}

/// The error lines about a refused reload of `served`'s files.
fn refusals(served: &Served) -> Vec<serde_json::Value> {
    let file = served.pair.cert.display().to_string();
    logs::lines(|l| {
        l["message"] == "serving certificate not reloaded; the current one stays"
            && l["cert_file"] == file.as_str()
    })
}

#[tokio::test]
async fn a_reload_serves_the_new_pair_to_new_handshakes_and_keeps_open_connections() {
    if !tls::available("a_reload_serves_the_new_pair_to_new_handshakes") {
        return;
    }
    let mut one = TestCa::new("reload CA one");
    let mut two = TestCa::new("reload CA two");
    let first = one.issue(&Leaf::default());
    let second = two.issue(&Leaf::default());
    let served = Served::new(&first);
    let app = TestApp::builder().https(&one, &served.pair).spawn().await;
    let (pem1, pem2) = (one.cert_pem(), two.cert_pem());
    let trusting_both = || tls::client(&[&pem1, &pem2]);

    let h2 = trusting_both().build().unwrap();
    let h1 = trusting_both().http1_only().build().unwrap();
    for (c, v) in [(&h2, Version::HTTP_2), (&h1, Version::HTTP_11)] {
        let res = c.get(app.url("/livez")).send().await.unwrap();
        assert_eq!(res.version(), v);
        assert_eq!(tls::peer_der(&res), tls::leaf_der(&first.cert));
    }

    served.put(&second.cert, &second.key);
    app.reload.reload().expect("the new pair loads");

    let fresh = trusting_both().build().unwrap();
    let res = fresh.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(
        tls::peer_der(&res),
        tls::leaf_der(&second.cert),
        "a new handshake sees the new certificate (another serial, another CA)"
    );
    for (c, v) in [(&h2, Version::HTTP_2), (&h1, Version::HTTP_11)] {
        let res = c.get(app.url("/livez")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{v:?}");
        assert_eq!(
            tls::peer_der(&res),
            tls::leaf_der(&first.cert),
            "the connection open before the reload answers on ({v:?})"
        );
    }
    let reloaded = logs::lines(|l| {
        l["message"] == "serving certificate reloaded"
            && l["cert_file"] == served.pair.cert.display().to_string().as_str()
    });
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert!(
        reloaded[0]["subject"]
            .as_str()
            .unwrap()
            .contains("huntaze-test")
    );
    assert!(reloaded[0]["not_after"].as_str().is_some());
}

#[tokio::test]
async fn a_garbage_mismatched_or_expired_pair_is_refused_and_the_old_one_stays() {
    if !tls::available("a_garbage_mismatched_or_expired_pair_is_refused") {
        return;
    }
    let mut ca = TestCa::new("reload refusals CA");
    let good = ca.issue(&Leaf::default());
    let other = ca.issue(&Leaf::default());
    let expired = ca.issue(&Leaf {
        days: -1,
        ..Leaf::default()
    });
    let garbage = ca.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let served = Served::new(&good);
    let app = TestApp::builder().https(&ca, &served.pair).spawn().await;
    let pem = ca.cert_pem();

    let cases: [(&str, &Path, &Path); 3] = [
        ("garbage", &garbage, &good.key),
        ("mismatched key", &good.cert, &other.key),
        ("expired", &expired.cert, &expired.key),
    ];
    for (n, (what, cert, key)) in cases.into_iter().enumerate() {
        served.put(cert, key);
        let err = app.reload.reload().expect_err(what);
        let lines = refusals(&served);
        assert_eq!(lines.len(), n + 1, "{what}: one error line each: {lines:?}");
        let line = lines.last().unwrap();
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["error"], err.to_string().as_str(), "{what}: {line}");
        let fresh = tls::client(&[&pem]).build().unwrap();
        let res = fresh.get(app.url("/livez")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{what}");
        assert_eq!(
            tls::peer_der(&res),
            tls::leaf_der(&good.cert),
            "{what}: the old pair is still served"
        );
    }
    assert!(
        refusals(&served)[2]["error"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_its_certificate_on_sighup() {
    if !tls::available("the_binary_reloads_its_certificate_on_sighup") {
        return;
    }
    let mut ca = TestCa::new("binary reload CA");
    let first = ca.issue(&Leaf::default());
    let second = ca.issue(&Leaf::default());
    let served = Served::new(&first);
    let data = tempfile::tempdir().unwrap();
    let running = Running::start(
        Command::new(env!("CARGO_BIN_EXE_huntaze"))
            .env("HUNTAZE_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("HUNTAZE_DATA_DIR", data.path())
            .env("HUNTAZE_TLS_CERT_FILE", &served.pair.cert)
            .env("HUNTAZE_TLS_KEY_FILE", &served.pair.key)
            .env("RUST_LOG", "info"),
    );
    let addr = running.ready().await;
    let url = format!("https://{addr}/livez");
    let pem = ca.cert_pem();
    let peer = || async {
        let c = tls::client(&[&pem]).build().unwrap();
        let res = c.get(&url).send().await.expect("HTTPS answers");
        assert_eq!(res.status(), 200);
        tls::peer_der(&res)
    };
    assert_eq!(peer().await, tls::leaf_der(&first.cert));

    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    served.put(&second.cert, &second.key);
    hup(running.child.id());
    assert!(
        running.wait_for(Duration::from_secs(10), "serving certificate reloaded"),
        "{}",
        running.lines().join("\n")
    );
    assert_eq!(peer().await, tls::leaf_der(&second.cert));

    // A bad pair: logged, the process lives on with the pair it had.
    served.put(&second.cert, &first.key);
    hup(running.child.id());
    assert!(
        running.wait_for(Duration::from_secs(10), "not reloaded"),
        "{}",
        running.lines().join("\n")
    );
    assert_eq!(peer().await, tls::leaf_der(&second.cert));
    let line = running
        .lines()
        .into_iter()
        .find(|l| l.contains("not reloaded"))
        .unwrap();
    assert!(line.contains("does not belong"), "{line}");
}

#[test]
fn the_binary_refuses_to_start_with_a_bad_pair_and_names_the_setting() {
    if !tls::available("the_binary_refuses_to_start_with_a_bad_pair") {
        return;
    }
    let mut ca = TestCa::new("start-up CA");
    let good = ca.issue(&Leaf::default());
    let other = ca.issue(&Leaf::default());
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_huntaze"))
        .env("HUNTAZE_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("HUNTAZE_DATA_DIR", data.path())
        .env("HUNTAZE_TLS_CERT_FILE", &good.cert)
        .env("HUNTAZE_TLS_KEY_FILE", &other.key)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HUNTAZE_TLS_CERT_FILE"), "{stderr}");
    assert!(stderr.contains("does not belong"), "{stderr}");
}

/// A reload asked for while the server starts (a renewal hook during a
/// restart) neither kills it (SIGHUP's default action) nor is lost: the
/// certificate is read again once the server is built. The start is held
/// at the database (a peer that accepts and never answers) to make the
/// window wide.
#[tokio::test]
async fn a_sighup_while_the_binary_starts_is_a_reload_not_an_exit() {
    if !tls::available("a_sighup_while_the_binary_starts_is_a_reload_not_an_exit") {
        return;
    }
    let mut ca = TestCa::new("start-up reload CA");
    let pair = ca.issue(&Leaf::default());
    let silent_db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db_url = format!(
        "postgres://huntaze@127.0.0.1:{}/huntaze",
        silent_db.local_addr().unwrap().port()
    );
    let data = tempfile::tempdir().unwrap();
    let mut running = Running::start(
        Command::new(env!("CARGO_BIN_EXE_huntaze"))
            .env("HUNTAZE_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("HUNTAZE_DATA_DIR", data.path())
            .env("HUNTAZE_DATABASE_URL", db_url)
            .env("HUNTAZE_DB_ACQUIRE_TIMEOUT_MS", "2000")
            .env("HUNTAZE_TLS_CERT_FILE", &pair.cert)
            .env("HUNTAZE_TLS_KEY_FILE", &pair.key)
            .env("RUST_LOG", "info"),
    );
    assert!(
        running.wait_for(Duration::from_secs(20), "serving certificate loaded"),
        "{}",
        running.lines().join("\n")
    );
    let ok = Command::new("kill")
        .args(["-HUP", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(
        running.wait_for(Duration::from_secs(20), "serving certificate reloaded"),
        "the reload asked for at start was done once the server was built:\n{}",
        running.lines().join("\n")
    );
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "a SIGHUP while starting ended the process:\n{}",
        running.lines().join("\n")
    );
    drop(silent_db);
}
