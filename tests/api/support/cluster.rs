//! N real `huntaze` processes (the binary this package builds) on loopback
//! behind Debian's nginx, sharing one PostgreSQL database, one Redis server of
//! the test's own and one TikTok sandbox — the scale-out shape of
//! `deploy/nginx/huntaze.conf`, with the same proxy and retry directives.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pg::{PgTestDb, services_required};
use super::redis::RedisServer;

pub const SECRET: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
pub const TOKEN: &str = "cluster-token";

fn nginx_binary() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| (*p).to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

pub struct Instance {
    pub port: u16,
    child: Option<Child>,
    data_dir: tempfile::TempDir,
}

pub struct Cluster {
    /// Held for its drop (which drops the database), after the processes.
    _pg: PgTestDb,
    pub redis: RedisServer,
    pub instances: Vec<Instance>,
    pub nginx_port: u16,
    nginx: Option<Child>,
    nginx_dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    pub http: reqwest::Client,
}

impl Cluster {
    /// None (after a SKIPPED message) when PostgreSQL, redis-server or nginx
    /// is missing, unless services are required (CI), where that panics.
    pub async fn start(test: &str, n: usize) -> Option<Self> {
        if !super::pg::available(test).await {
            return None;
        }
        let Some(nginx) = nginx_binary() else {
            assert!(
                !services_required(),
                "nginx is required (HUNTAZE_TEST_REQUIRE_SERVICES=1) but not installed"
            );
            eprintln!("SKIPPED {test}: nginx not installed (apt-get install nginx)");
            return None;
        };
        let redis = RedisServer::start(test).await?;
        let pg = PgTestDb::create().await;

        let nginx_port = free_port();
        let public = format!("http://127.0.0.1:{nginx_port}");
        let settings = huntaze::tiktok_sandbox::SandboxSettings {
            redirect_uris: vec![format!("{public}/api/auth/tiktok/callback")],
            fault_controls: true,
            ..Default::default()
        };
        let sandbox = huntaze::tiktok_sandbox::Sandbox::new(settings.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sandbox");
        let sandbox_base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(huntaze::tiktok_sandbox::serve(
            listener,
            sandbox.clone(),
            std::future::pending(),
        ));

        let env = vec![
            ("HUNTAZE_PUBLIC_URL", public),
            ("HUNTAZE_DATABASE_URL", pg.url.clone()),
            ("HUNTAZE_REDIS_URL", redis.url()),
            ("HUNTAZE_REDIS_PROBE_MS", "200".into()),
            ("HUNTAZE_SECRET_KEY", SECRET.into()),
            ("HUNTAZE_ENCRYPTION_KEY", SECRET.into()),
            ("HUNTAZE_MONITORING_TOKEN", TOKEN.into()),
            ("HUNTAZE_TRUSTED_PROXIES", "127.0.0.1".into()),
            ("HUNTAZE_TIKTOK_CLIENT_KEY", settings.client_key.clone()),
            (
                "HUNTAZE_TIKTOK_CLIENT_SECRET",
                settings.client_secret.clone(),
            ),
            (
                "HUNTAZE_TIKTOK_AUTH_URL",
                format!("{sandbox_base}/v2/auth/authorize/"),
            ),
            ("HUNTAZE_TIKTOK_API_URL", sandbox_base),
            ("HUNTAZE_HEALTH_INTERVAL_MS", "200".into()),
            ("HUNTAZE_MONITORING_FLUSH_MS", "300".into()),
            ("HUNTAZE_SHUTDOWN_DRAIN_MS", "1000".into()),
            ("HUNTAZE_QUERY_CACHE_TTL_MS", "120000".into()),
            ("HUNTAZE_LANDING_REFRESH_MS", "600000".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

        let nginx_dir = tempfile::tempdir().expect("nginx dir");
        let mut cluster = Self {
            _pg: pg,
            redis,
            instances: Vec::new(),
            nginx_port,
            nginx: None,
            nginx_dir,
            env,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        for _ in 0..n {
            let instance = Instance {
                port: free_port(),
                child: None,
                data_dir: tempfile::tempdir().expect("data dir"),
            };
            cluster.instances.push(instance);
        }
        for i in 0..n {
            cluster.launch(i);
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster.start_nginx(&nginx);
        Some(cluster)
    }

    fn launch(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_huntaze"));
        for (k, _) in std::env::vars() {
            if k.starts_with("HUNTAZE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HUNTAZE_LISTEN", format!("127.0.0.1:{}", inst.port))
            .env("HUNTAZE_DATA_DIR", inst.data_dir.path())
            .env("HUNTAZE_INSTANCE_ID", format!("instance-{i}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        inst.child = Some(cmd.spawn().expect("start huntaze"));
    }

    pub fn instance_url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.instances[i].port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nginx_port)
    }

    async fn wait_ready(&self, i: usize) {
        let url = self.instance_url(i, "/readyz");
        for _ in 0..300 {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("instance {i} did not become ready");
    }

    fn start_nginx(&mut self, binary: &str) {
        let dir = self.nginx_dir.path();
        // Workers may run as another user: they must reach the prefix.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        let d = dir.display();
        let servers: String = self
            .instances
            .iter()
            .map(|i| {
                format!(
                    "        server 127.0.0.1:{} max_fails=3 fail_timeout=10s;\n",
                    i.port
                )
            })
            .collect();
        let conf = format!(
            r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream huntaze {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 2s;
        proxy_read_timeout 15s;
        proxy_next_upstream error timeout http_502 http_503 http_504;
        proxy_next_upstream_tries 3;
        add_header X-Upstream $upstream_addr always;
        location = /api/auth/tiktok/callback {{
            proxy_next_upstream off;
            proxy_pass http://huntaze;
        }}
        location / {{
            proxy_pass http://huntaze;
        }}
    }}
}}
"#,
            port = self.nginx_port
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        self.nginx = Some(child);
    }

    /// nginx's master and its worker processes, by pid.
    pub fn nginx_processes(&self) -> Vec<u32> {
        let Some(master) = self.nginx.as_ref().map(Child::id) else {
            return Vec::new();
        };
        let mut pids = vec![master];
        pids.extend(children_of(master));
        pids
    }

    /// Waits until nginx answers `/` (through some instance).
    pub async fn wait_nginx(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(self.url("/livez")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log =
            std::fs::read_to_string(self.nginx_dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx did not answer: {log}");
    }

    /// SIGTERM, as an orchestrator stopping the instance would.
    pub fn terminate(&mut self, i: usize) {
        if let Some(child) = &self.instances[i].child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Waits for the process to exit; its exit status.
    pub async fn wait_exit(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let mut child = self.instances[i].child.take()?;
        for _ in 0..400 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Starts instance `i` again on its port and waits until it is ready.
    pub async fn restart(&mut self, i: usize) {
        self.launch(i);
        self.wait_ready(i).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(nginx) = self.nginx.take() {
            stop_nginx(nginx);
        }
        for inst in &mut self.instances {
            if let Some(mut child) = inst.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Stops nginx the way its master expects (SIGTERM: it stops its workers,
/// then exits). `Child::kill` is SIGKILL, which the master cannot pass on:
/// its workers were left running, orphaned. If the master is still there
/// after 5 s, it and its workers get SIGKILL.
fn stop_nginx(mut master: Child) {
    let workers = children_of(master.id());
    let signal = |sig: &str, pids: &[u32]| {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let _ = Command::new("kill")
            .arg(sig)
            .args(&pids)
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM", &[master.id()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = master.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = master.kill();
    let _ = master.wait();
    signal("-KILL", &workers);
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    // After the ")" closing the command name: state, ppid.
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether `pid` is a process that still runs (not gone, not a zombie).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}
