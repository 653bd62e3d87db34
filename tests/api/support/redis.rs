//! Redis for the tests: the machine's server (each test under its own key
//! prefix), or a private `redis-server` process a test may stop and start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pg::services_required;
use super::tls::Pair;

pub fn url() -> String {
    std::env::var("HUNTAZE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn answers(url: &str) -> bool {
    answers_with(url, None).await
}

/// Whether `url` answers a PING; over TLS trusting `ca` when given.
async fn answers_with(url: &str, ca: Option<&Path>) -> bool {
    ping(url, ca).await.is_ok()
}

/// A PING on `url`; over TLS trusting `ca` when given.
async fn ping(url: &str, ca: Option<&Path>) -> Result<(), String> {
    let client = match ca {
        None => redis::Client::open(url),
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca).expect("read CA certificate")),
            },
        ),
    };
    let client = client.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Whether the shared Redis answers; prints why a test is skipped, or panics
/// when services are required (CI).
pub async fn available(test: &str) -> bool {
    let ok = answers(&url()).await;
    if !ok {
        assert!(
            !services_required(),
            "Redis is required (HUNTAZE_TEST_REDIS_URL / HUNTAZE_TEST_REQUIRE_SERVICES=1) but {} is unreachable",
            url()
        );
        eprintln!(
            "SKIPPED {test}: Redis unreachable at {} (set HUNTAZE_TEST_REDIS_URL)",
            url()
        );
    }
    ok
}

/// A key prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("huntaze-test-{}", uuid::Uuid::new_v4().simple())
}

/// A `redis-server` of the test's own, on a fixed port so it can be stopped
/// and started again at the same address; plain, or TLS only.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    tls: Option<ServerTls>,
}

/// What a TLS server serves, and the CA that signed it (for the readiness
/// check).
struct ServerTls {
    pair: Pair,
    ca: PathBuf,
}

impl RedisServer {
    /// None (with a SKIPPED message) when `redis-server` is not installed,
    /// unless services are required.
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None).await
    }

    /// A server that speaks TLS only (`--port 0`), serving `pair` (signed
    /// by the CA whose certificate is `ca`) and not asking clients for
    /// certificates. None as [`start`](Self::start) does.
    pub async fn start_tls(test: &str, pair: &Pair, ca: &Path) -> Option<Self> {
        let tls = ServerTls {
            pair: pair.clone(),
            ca: ca.to_owned(),
        };
        Self::start_with(test, Some(tls)).await
    }

    async fn start_with(test: &str, tls: Option<ServerTls>) -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                !services_required(),
                "redis-server is required (HUNTAZE_TEST_REQUIRE_SERVICES=1) but not installed"
            );
            eprintln!("SKIPPED {test}: redis-server not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = Self {
            port,
            child: None,
            tls,
        };
        server.resume().await;
        Some(server)
    }

    /// `redis://127.0.0.1:P`, or `rediss://127.0.0.1:P` for a TLS server.
    pub fn url(&self) -> String {
        self.url_for("127.0.0.1")
    }

    /// The URL naming the server by `host` (the certificate is checked
    /// against it).
    pub fn url_for(&self, host: &str) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{host}:{}", self.port)
    }

    /// Serves `pair` (signed by the CA `ca`) from the next
    /// [`resume`](Self::resume) on, as an operator replacing the server's
    /// certificate would.
    pub fn replace_certificate(&mut self, pair: &Pair, ca: &Path) {
        self.tls = Some(ServerTls {
            pair: pair.clone(),
            ca: ca.to_owned(),
        });
    }

    /// Starts the process (again) and waits until it answers.
    pub async fn resume(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some(tls) => cmd
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(&tls.pair.cert)
                .arg("--tls-key-file")
                .arg(&tls.pair.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        let ca = self.tls.as_ref().map(|t| t.ca.clone());
        for _ in 0..100 {
            match ping(&url, ca.as_deref()).await {
                Ok(()) => return,
                // A TLS server whose certificate names other hosts (as a
                // test may want) is up once it presents that certificate.
                Err(e) if ca.is_some() && e.contains("invalid peer certificate") => return,
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Kills the process (as a crash or an operator's stop would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
