//! Test support: spawn the real server (the production `AppBuilder`) on a
//! random port with a fresh database, and a client that keeps cookies and
//! does not follow redirects.

pub mod binary;
pub mod cli;
pub mod cluster;
pub mod logs;
pub mod pg;
pub mod probes;
pub mod proxy;
pub mod redis;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use huntaze::Config;
use huntaze::HealthCheck;
use huntaze::{AppBuilder, AppState, ReloadHandle, ShutdownHandle};
use tokio::task::JoinHandle;

pub use pg::Backend;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// A client that sends no Accept-Encoding and decompresses nothing.
    pub raw: reqwest::Client,
    pub state: AppState,
    pub shutdown: ShutdownHandle,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
    pub data_dir: tempfile::TempDir,
    /// Between the server and PostgreSQL, when the test asked for it.
    pub proxy: Option<proxy::ChaosProxy>,
    pub pg: Option<pg::PgTestDb>,
    /// A standalone TikTok sandbox this server is configured against.
    pub sandbox: Option<huntaze::tiktok_sandbox::Sandbox>,
    pub sandbox_base: String,
    /// Reads the certificate pair again, as SIGHUP does.
    pub reload: ReloadHandle,
    /// `http://` and the plain-HTTP redirect listener's address, when the
    /// test asked for one.
    pub redirect_base: Option<String>,
}

type Tweak = Box<dyn FnOnce(&mut Config) + Send>;

pub struct TestAppBuilder {
    backend: Backend,
    tweaks: Vec<Tweak>,
    health_checks: Vec<Arc<dyn HealthCheck>>,
    probes: bool,
    proxy: bool,
    sandbox: Option<huntaze::tiktok_sandbox::SandboxSettings>,
    /// Serve HTTPS with this pair; clients trust this CA certificate (PEM).
    https: Option<(tls::Pair, Vec<u8>)>,
    redirect_listener: bool,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            backend: Backend::Sqlite,
            tweaks: Vec::new(),
            health_checks: Vec::new(),
            probes: true,
            proxy: false,
            sandbox: None,
            https: None,
            redirect_listener: false,
        }
    }

    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request failed")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if !std::thread::panicking() {
            logs::assert_strict();
        }
    }
}

impl TestAppBuilder {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Runs a standalone TikTok sandbox on its own port and configures the
    /// server against it as if it were TikTok (credentials and URLs).
    pub fn tiktok_sandbox(self) -> Self {
        self.tiktok_sandbox_with(Default::default())
    }

    pub fn tiktok_sandbox_with(
        mut self,
        settings: huntaze::tiktok_sandbox::SandboxSettings,
    ) -> Self {
        self.sandbox = Some(settings);
        self
    }

    /// Routes PostgreSQL through a [`proxy::ChaosProxy`] the test controls.
    pub fn through_proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    pub fn config(mut self, tweak: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    pub fn health_check(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.health_checks.push(check);
        self
    }

    /// Serves HTTPS with `pair` (the base URL is `https://127.0.0.1:port`;
    /// the public URL stays `http://`, as a test may want it); the app's
    /// clients trust `ca`.
    pub fn https(mut self, ca: &tls::TestCa, pair: &tls::Pair) -> Self {
        self.https = Some((pair.clone(), ca.cert_pem()));
        self
    }

    /// Also serves the plain-HTTP redirect listener on a port of its own
    /// ([`TestApp::redirect_base`]); needs [`Self::https`].
    pub fn redirect_listener(mut self) -> Self {
        self.redirect_listener = true;
        self
    }

    pub async fn spawn(self) -> TestApp {
        logs::init();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config {
            data_dir: data_dir.path().to_path_buf(),
            ..Config::default()
        };
        config.server.listen = "127.0.0.1:0".into();
        config.server.public_url = base.clone();
        config.health.interval_ms = 200;
        config.health.check_timeout_ms = 1_000;
        config.landing.refresh_ms = 200;
        config.database.acquire_timeout_ms = 2_000;
        config.server.shutdown_grace_ms = 5_000;
        let mut chaos = None;
        let pg = match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let db = pg::PgTestDb::create().await;
                let mut url = url::Url::parse(&db.url).expect("pg url");
                if self.proxy {
                    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
                    let port = url.port().unwrap_or(5432);
                    let upstream = tokio::net::lookup_host((host.as_str(), port))
                        .await
                        .expect("resolve pg")
                        .next()
                        .expect("pg address");
                    let p = proxy::ChaosProxy::start(upstream).await;
                    url.set_host(Some("127.0.0.1")).unwrap();
                    url.set_port(Some(p.port)).unwrap();
                    chaos = Some(p);
                }
                config.database.url = Some(url.to_string().into());
                Some(db)
            }
        };
        let mut sandbox = None;
        let mut sandbox_base = String::new();
        if let Some(mut settings) = self.sandbox {
            // Started for tests: the fault controls are served.
            settings.fault_controls = true;
            let sb = huntaze::tiktok_sandbox::Sandbox::new(settings.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind sandbox");
            sandbox_base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(huntaze::tiktok_sandbox::serve(
                listener,
                sb.clone(),
                std::future::pending(),
            ));
            config.tiktok.client_key = Some(settings.client_key.clone());
            config.tiktok.client_secret = Some(settings.client_secret.clone().into());
            config.tiktok.auth_url = format!("{sandbox_base}/v2/auth/authorize/");
            config.tiktok.api_url = sandbox_base.clone();
            sandbox = Some(sb);
        }
        let mut base = base;
        if let Some((pair, _)) = &self.https {
            config.server.tls_cert_file = Some(pair.cert.clone());
            config.server.tls_key_file = Some(pair.key.clone());
            base = base.replacen("http://", "https://", 1);
        }
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        if let Some(sb) = &sandbox {
            // Registered as with TikTok: the URI this server sends, after
            // whatever the test changed.
            sb.register_redirect_uri(&config.tiktok_redirect_uri());
        }
        let mut builder = AppBuilder::new(config).listener(listener);
        if self.redirect_listener {
            let redirect = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind redirect listener");
            builder = builder.redirect_listener(redirect);
        }
        if self.probes {
            builder = builder.extra_routes(probes::routes());
        }
        for check in self.health_checks {
            builder = builder.health_check(check);
        }
        let app = builder.build().await.expect("server builds");
        let state = app.state().clone();
        let shutdown = app.shutdown_handle();
        let reload = app.reload_handle();
        let redirect_base = app.redirect_addr().map(|a| format!("http://{a}"));
        let server = tokio::spawn(app.run(false));
        let trust = |b: reqwest::ClientBuilder| match &self.https {
            Some((_, ca)) => b.tls_certs_only([reqwest::Certificate::from_pem(ca).expect("CA")]),
            None => b,
        };
        let client = trust(reqwest::Client::builder())
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let raw = trust(reqwest::Client::builder())
            .redirect(reqwest::redirect::Policy::none())
            .no_brotli()
            .no_gzip()
            .no_zstd()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        TestApp {
            base,
            client,
            raw,
            state,
            shutdown,
            server: Some(server),
            data_dir,
            proxy: chaos,
            pg,
            sandbox,
            sandbox_base,
            reload,
            redirect_base,
        }
    }
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one async test body on SQLite and on PostgreSQL:
/// `both_backends!(async fn name(backend) { ... });` makes `name::sqlite` and
/// `name::postgres`. The PostgreSQL variant skips with a message when no
/// server is reachable, unless `HUNTAZE_TEST_REQUIRE_SERVICES=1` (CI), where a
/// missing server fails the test.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($backend: $crate::support::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body($crate::support::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::support::pg::available(concat!(module_path!(), "::postgres")).await {
                    body($crate::support::Backend::Postgres).await
                }
            }
        }
    )*};
}

/// A fresh client (its own cookie jar), for a second user.
pub fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Sends `req` and reads its body as JSON (panics on a transport error or a
/// body that is not JSON: in a test that is the failure).
pub async fn json(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("a JSON body")
}

pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    pub async fn register_with(
        &self,
        client: &reqwest::Client,
        email: &str,
        password: &str,
    ) -> (u16, serde_json::Value) {
        let res = client
            .post(self.url("/api/auth/register"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("register");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or_default())
    }

    pub async fn login_with(
        &self,
        client: &reqwest::Client,
        email: &str,
        password: &str,
    ) -> (u16, serde_json::Value) {
        let res = client
            .post(self.url("/api/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or_default())
    }

    /// Waits until `/readyz` answers 200. A server whose start met a slow
    /// database (a short acquire timeout on a loaded machine) applies its
    /// migrations in the background and answers writes 503 until then.
    pub async fn wait_ready(&self) {
        let ready = eventually(Duration::from_secs(30), || async {
            self.get("/readyz").await.status() == 200
        })
        .await;
        assert!(ready, "not ready within 30 s");
    }

    /// Registers `email` on the app's own client; returns the CSRF token.
    pub async fn sign_up(&self, email: &str) -> String {
        let (status, body) = self.register_with(&self.client, email, PASSWORD).await;
        assert_eq!(status, 201, "{body}");
        body["csrfToken"].as_str().expect("csrf token").to_owned()
    }

    /// Makes `email` an admin directly in the database.
    pub async fn promote(&self, email: &str) {
        sqlx::query("UPDATE users SET role = 'admin' WHERE email = $1")
            .bind(email)
            .execute(self.state.db.pool())
            .await
            .expect("promote");
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(self.state.db.pool())
            .await
            .expect("count")
    }
}

/// The value of the session cookie in a response's `Set-Cookie`.
pub fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("huntaze_session=") && !v.starts_with("huntaze_session=;"))
        .map(str::to_owned)
}
