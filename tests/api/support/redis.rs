//! Redis for the tests: the machine's server (each test under its own key
//! prefix), or a private `redis-server` process a test may stop and start.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pg::services_required;

pub fn url() -> String {
    std::env::var("HUNTAZE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await
    .is_ok_and(|r| r.is_ok())
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
/// and started again at the same address.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// None (with a SKIPPED message) when `redis-server` is not installed,
    /// unless services are required.
    pub async fn start(test: &str) -> Option<Self> {
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
        let mut server = Self { port, child: None };
        server.resume().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) and waits until it answers.
    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        for _ in 0..100 {
            if answers(&url).await {
                return;
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
