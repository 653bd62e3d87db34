//! Scale-out: three real `huntaze` processes behind nginx on one
//! PostgreSQL database and one Redis. Skipped with a message where nginx,
//! PostgreSQL or redis-server is missing; required in CI.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::cluster::{Cluster, TOKEN, running};
use crate::support::{PASSWORD, eventually, json, session_cookie};

fn cookie_of(res: &reqwest::Response) -> String {
    session_cookie(res)
        .expect("session cookie")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn register(c: &Cluster, base: &str, email: &str) -> (String, String) {
    let res = c
        .http
        .post(format!("{base}/api/auth/register"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), 201, "register {email} on {base}");
    let cookie = cookie_of(&res);
    let body: Value = res.json().await.expect("json");
    (
        cookie,
        body["csrfToken"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn status_of(c: &Cluster, url: &str, cookie: &str) -> u16 {
    c.http
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn base(c: &Cluster, i: usize) -> String {
    c.instance_url(i, "")
}

async fn login(c: &Cluster, email: &str, password: &str) -> u16 {
    c.http
        .post(c.url("/api/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": password }))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_sessions_flows_limits_and_invalidations() {
    let Some(c) = Cluster::start("scale_out::share", 3).await else {
        return;
    };
    c.wait_nginx().await;

    // A session made on instance 0 works on the others and through nginx,
    // which spreads requests over all three.
    let (cookie, csrf) = register(&c, &base(&c, 0), "one@example.com").await;
    for i in 1..3 {
        assert_eq!(
            status_of(&c, &c.instance_url(i, "/api/auth/session"), &cookie).await,
            200
        );
    }
    let mut upstreams = HashSet::new();
    for _ in 0..9 {
        let res = c
            .http
            .get(c.url("/api/auth/session"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        upstreams.insert(res.headers()["x-upstream"].to_str().unwrap().to_owned());
    }
    assert_eq!(upstreams.len(), 3, "nginx reached {upstreams:?}");

    // The dashboard, asked on any instance, adds up all three.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let d: Value = c
                .http
                .get(c.instance_url(2, "/api/monitoring/dashboard?range=15m"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let names: HashSet<&str> = d["instances"]
                .as_array()
                .map(|a| a.iter().filter_map(|i| i["instance"].as_str()).collect())
                .unwrap_or_default();
            let sum: i64 = d["instances"]
                .as_array()
                .map(|a| a.iter().filter_map(|i| i["requests"].as_i64()).sum())
                .unwrap_or_default();
            names == HashSet::from(["instance-0", "instance-1", "instance-2"])
                && d["overall"]["requests"].as_i64() == Some(sum)
        })
        .await,
        "the dashboard does not add up every instance"
    );

    // The landing figures agree everywhere after a write on one instance
    // (their periodic refresh is ten minutes here).
    let (_, _) = register(&c, &base(&c, 1), "two@example.com").await;
    for i in 0..3 {
        let url = c.instance_url(i, "/");
        assert!(
            eventually(Duration::from_secs(5), || async {
                let html = c.http.get(&url).send().await.unwrap().text().await.unwrap();
                html.contains("<strong>2</strong><span>creators registered")
            })
            .await,
            "instance {i} does not show 2 creators"
        );
    }

    // A write's cache invalidation is seen on every instance: logout on 2,
    // and 0 and 1 (which cached the session for two minutes) refuse it.
    let res = c
        .http
        .post(c.instance_url(2, "/api/auth/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "logout {}", res.status());
    for i in 0..2 {
        let url = c.instance_url(i, "/api/auth/session");
        assert!(
            eventually(Duration::from_secs(3), || async {
                status_of(&c, &url, &cookie).await == 401
            })
            .await,
            "instance {i} still honours the ended session"
        );
    }

    // A TikTok flow begun on instance 0 completes when TikTok sends the
    // browser back to instance 1; instance 2 then sees the connection.
    let (cookie, _) = register(&c, &base(&c, 0), "creator@example.com").await;
    let res = c
        .http
        .get(c.instance_url(0, "/api/auth/tiktok"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let authorize = location(&res);
    let callback = crate::tiktok::decide(&authorize, "allow").await;
    let callback = callback.replace(&c.url(""), &base(&c, 1));
    assert!(callback.starts_with(&base(&c, 1)), "{callback}");
    let res = c
        .http
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let status: Value = json(
        c.http
            .get(c.instance_url(2, "/api/platforms/tiktok"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(status["connected"], true, "{status}");

    // The login lockout holds across instances: five failures spread by
    // nginx over three instances lock the account everywhere.
    register(&c, &base(&c, 2), "target@example.com").await;
    for _ in 0..5 {
        assert_eq!(
            login(&c, "target@example.com", "wrong password!").await,
            401
        );
    }
    for _ in 0..3 {
        assert_eq!(login(&c, "target@example.com", PASSWORD).await, 429);
    }
    // And the per-account attempt limit (10 a minute) is one budget.
    register(&c, &base(&c, 2), "budget@example.com").await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        // Alternate a good and a bad password: no lockout, only the budget.
        let pw = if i % 2 == 0 {
            PASSWORD
        } else {
            "wrong password!"
        };
        statuses.push(login(&c, "budget@example.com", pw).await);
    }
    assert!(
        statuses[..10].iter().all(|s| *s == 200 || *s == 401) && statuses[10..] == [429, 429],
        "{statuses:?}"
    );
}

/// GETs through nginx from 8 workers (`/` and a session read, alternating)
/// until stopped, counting answers and failures (anything but 200, or no
/// answer at all).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(c: &Cluster, cookie: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers = (0..8)
            .map(|w| {
                let (http, cookie) = (c.http.clone(), cookie.to_owned());
                let urls = [c.url("/"), c.url("/api/auth/session")];
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut n = w;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let url = &urls[n % 2];
                        match http.get(url).header("cookie", &cookie).send().await {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.bytes().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                if let Ok(mut f) = failures.lock() {
                                    f.push(format!("{url}: {:?}", other.map(|r| r.status())));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            workers,
        }
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the workers; the answered count and every failure.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_on_one_instance_under_load_loses_no_request_and_it_rejoins() {
    let Some(mut c) = Cluster::start("scale_out::sigterm", 3).await else {
        return;
    };
    c.wait_nginx().await;
    let (cookie, _) = register(&c, &base(&c, 0), "load@example.com").await;
    let load = Load::start(&c, &cookie);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = load.answered();
    c.terminate(1);
    let exit = c.wait_exit(1).await;
    assert!(exit.is_some_and(|s| s.success()), "graceful exit: {exit:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.restart(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, failures) = load.finish().await;
    eprintln!(
        "sigterm under load: {ok} answered 200, {} failed",
        failures.len()
    );
    assert!(before > 0 && ok > before, "load ran: {before} then {ok}");
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );

    // The restarted instance takes traffic again.
    let port = format!("127.0.0.1:{}", c.instances[1].port);
    assert!(
        eventually(Duration::from_secs(15), || async {
            let res = c.http.get(c.url("/livez")).send().await;
            res.is_ok_and(|r| {
                r.headers()
                    .get("x-upstream")
                    .is_some_and(|v| v == port.as_str())
            })
        })
        .await,
        "instance 1 did not rejoin"
    );
}

async fn external_status(c: &Cluster, i: usize) -> (String, Value) {
    let body: Value = json(
        c.http
            .get(c.instance_url(i, "/api/health/external"))
            .bearer_auth(TOKEN),
    )
    .await;
    (
        body["status"].as_str().unwrap_or_default().to_owned(),
        body["details"]["redis"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_and_started_mid_run_causes_no_5xx_and_health_follows() {
    let Some(mut c) = Cluster::start("scale_out::redis", 3).await else {
        return;
    };
    c.wait_nginx().await;
    let (cookie, _) = register(&c, &base(&c, 0), "redis@example.com").await;
    let load = Load::start(&c, &cookie);
    // Logins (wrong password) exercise the shared rate limits throughout.
    let mut login_statuses = Vec::new();

    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        assert_eq!(external_status(&c, i).await.1["mode"], "shared");
    }
    c.redis.stop();
    for i in 0..3 {
        assert!(
            eventually(Duration::from_secs(5), || async {
                let (status, redis) = external_status(&c, i).await;
                status == "degraded" && redis["mode"] == "local"
            })
            .await,
            "instance {i} not degraded with Redis stopped"
        );
    }
    for _ in 0..3 {
        login_statuses.push(login(&c, "redis@example.com", "wrong password!").await);
    }
    c.redis.resume().await;
    for i in 0..3 {
        assert!(
            eventually(Duration::from_secs(10), || async {
                let (status, redis) = external_status(&c, i).await;
                status == "healthy" && redis["mode"] == "shared"
            })
            .await,
            "instance {i} not back to shared mode: {:?}",
            external_status(&c, i).await
        );
    }
    for _ in 0..2 {
        login_statuses.push(login(&c, "redis@example.com", "wrong password!").await);
    }
    let (ok, failures) = load.finish().await;
    assert!(
        login_statuses.iter().all(|s| *s == 401 || *s == 429),
        "{login_statuses:?}"
    );
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 0);
}

/// Dropping a cluster stops nginx's workers, not only its master: killed
/// with SIGKILL, the master left its workers orphaned and still listening,
/// three more nginx processes after every test run (fifteen had piled up
/// on this machine in one day).
#[tokio::test]
async fn a_dropped_cluster_leaves_no_nginx_process_behind() {
    let Some(c) = Cluster::start("scale_out::nginx_cleanup", 1).await else {
        return;
    };
    c.wait_nginx().await;
    let pids = c.nginx_processes();
    assert!(pids.len() >= 2, "nginx master and workers: {pids:?}");
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nginx processes still running after the cluster was dropped: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
