//! Validation, derived values and key material.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::SecretString;

use super::checks::{connections_for_file_limit, connections_past_file_room, open_file_limit};
use super::{Config, Environment};

/// The default configuration with `set` applied.
fn with(set: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    set(&mut config);
    config
}

#[test]
fn avatar_hosts_are_host_names_and_bad_entries_are_named_by_position() {
    let config =
        with(|c| c.tiktok.avatar_hosts = " *.TikTokCDN.com, .ibyteimg.com,byteimg.com. ,".into());
    assert_eq!(
        config.tiktok.avatar_host_suffixes(),
        Ok(vec![
            "tiktokcdn.com".to_owned(),
            "ibyteimg.com".to_owned(),
            "byteimg.com".to_owned()
        ])
    );
    assert!(Config::default().tiktok.avatar_host_suffixes().is_ok());
    let config = with(|c| {
        c.tiktok.avatar_hosts = "tiktokcdn.com,10.0.0.1,exa mple.com,https://x.com,-a.com".into()
    });
    assert_eq!(config.tiktok.avatar_host_suffixes(), Err(vec![2, 3, 4, 5]));
    let problems = config.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.setting == "HUNTAZE_TIKTOK_AVATAR_HOSTS"
                && p.message == "entry 2 is not a host name"
                && p.fatal),
        "{problems:?}"
    );
}

#[test]
fn production_without_secrets_names_each_missing_one() {
    let cfg = with(|c| c.env = Environment::Production);
    let fatal: Vec<_> = cfg
        .problems()
        .into_iter()
        .filter(|p| p.fatal)
        .map(|p| p.setting)
        .collect();
    assert_eq!(
        fatal,
        vec![
            "HUNTAZE_DATABASE_URL",
            "HUNTAZE_SECRET_KEY",
            "HUNTAZE_ENCRYPTION_KEY"
        ]
    );
}

#[test]
fn production_requires_the_database_url_written_out() {
    let prod = |url: Option<&str>| {
        with(|c| {
            c.env = Environment::Production;
            c.database.url = url.map(SecretString::from);
        })
    };
    let db_problems = |c: Config| {
        c.problems()
            .into_iter()
            .filter(|p| p.setting == "HUNTAZE_DATABASE_URL")
            .count()
    };
    assert_eq!(db_problems(prod(None)), 1);
    assert_eq!(db_problems(prod(Some("sqlite:///var/lib/huntaze/h.db"))), 0);
    assert_eq!(
        db_problems(prod(Some("postgres://h/db?sslmode=verify-full"))),
        0
    );
    assert_eq!(
        db_problems(Config::default()),
        0,
        "development keeps its default"
    );
}

#[test]
fn the_alert_webhook_must_be_http_with_a_host() {
    let problems = |url: &str| {
        with(|c| c.monitoring.alert_webhook_url = Some(url.into()))
            .problems()
            .into_iter()
            .filter(|p| p.setting == "HUNTAZE_ALERT_WEBHOOK_URL")
            .count()
    };
    for bad in ["ftp://x", "http://", "file:///tmp/x", "x"] {
        assert_eq!(problems(bad), 1, "{bad}");
    }
    for good in ["http://127.0.0.1:9/hook", "https://alerts.example.com/h"] {
        assert_eq!(problems(good), 0, "{good}");
    }
}

#[test]
fn every_bad_trusted_proxy_is_named_by_position() {
    let cfg = with(|c| c.server.trusted_proxies = "10.0.0.1, nope ,10.0.0.0/8,also-bad,::1".into());
    assert_eq!(cfg.server.trusted_proxy_nets().unwrap_err(), [2, 4]);
    let messages: Vec<String> = cfg.problems().iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "HUNTAZE_TRUSTED_PROXIES: entry 2 is not an IP address or CIDR",
            "HUNTAZE_TRUSTED_PROXIES: entry 4 is not an IP address or CIDR",
        ]
    );
}

#[test]
fn ipv4_mapped_trusted_proxies_are_ipv4_networks() {
    let config = with(|c| {
        c.server.trusted_proxies = "::ffff:127.0.0.1, ::ffff:10.0.0.0/104, 2001:db8::/32".into()
    });
    let nets: Vec<String> = config
        .server
        .trusted_proxy_nets()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]);
}

#[test]
fn the_connection_cap_leaves_room_for_the_pool_and_files() {
    assert_eq!(connections_for_file_limit(1_024, 10), 1_024 - 30 - 128);
    assert_eq!(connections_for_file_limit(65_536, 10), 65_536 - 158);
    // A small limit still serves, with half of it kept for the rest.
    assert_eq!(connections_for_file_limit(256, 10), 128);
    assert_eq!(connections_for_file_limit(1, 10), 1);
    assert_eq!(connections_for_file_limit(u64::MAX, 10), (1 << 20) - 158);
    let derived = Config::default().max_connections().unwrap();
    let limit = open_file_limit().unwrap_or(1_024);
    assert!(
        derived > 0 && (derived as u64) < limit,
        "{derived} of {limit}"
    );
}

#[test]
fn a_connection_cap_past_the_room_the_file_limit_leaves_is_advised_against() {
    // 1,024 files, a pool of 10: room for 1,024 − 30 − 128 = 866.
    let advice = connections_past_file_room(Some(1_000), Some(1_024), 10)
        .expect("1,000 connections under ulimit -n 1024 is advised against");
    assert_eq!(advice.setting, "HUNTAZE_MAX_CONNECTIONS");
    assert!(!advice.fatal);
    assert!(
        advice.message.contains("1024") && advice.message.contains("866"),
        "{}",
        advice.message
    );
    for quiet in [
        connections_past_file_room(Some(866), Some(1_024), 10),
        connections_past_file_room(None, Some(1_024), 10),
        connections_past_file_room(Some(1_000), None, 10),
        // Refused outright elsewhere.
        connections_past_file_room(Some(1_024), Some(1_024), 10),
    ] {
        assert_eq!(quiet, None);
    }
    // The pool counts: 20 connections leave room for 836 only.
    assert!(connections_past_file_room(Some(866), Some(1_024), 20).is_some());
}

#[test]
fn connection_limits_that_cannot_work_are_refused() {
    let limit = open_file_limit().expect("an open-file limit");
    for (cfg, setting) in [
        (
            with(|c| c.server.max_connections = Some(0)),
            "HUNTAZE_MAX_CONNECTIONS",
        ),
        (
            with(|c| c.server.max_connections = Some(usize::try_from(limit).unwrap_or(usize::MAX))),
            "HUNTAZE_MAX_CONNECTIONS",
        ),
        (
            with(|c| c.server.max_header_bytes = 1_023),
            "HUNTAZE_MAX_HEADER_BYTES",
        ),
        (
            with(|c| c.server.max_header_bytes = 256 * 1_024 + 1),
            "HUNTAZE_MAX_HEADER_BYTES",
        ),
        (
            with(|c| c.server.header_read_timeout_ms = 0),
            "HUNTAZE_HEADER_READ_TIMEOUT_MS",
        ),
        (
            with(|c| c.server.keep_alive_idle_ms = 0),
            "HUNTAZE_KEEP_ALIVE_IDLE_MS",
        ),
        (
            with(|c| c.server.send_timeout_ms = 0),
            "HUNTAZE_SEND_TIMEOUT_MS",
        ),
    ] {
        let fatal: Vec<_> = cfg
            .problems()
            .into_iter()
            .filter(|p| p.fatal)
            .map(|p| p.setting)
            .collect();
        assert_eq!(fatal, [setting]);
    }
    let cfg = with(|c| c.server.max_connections = Some(100));
    assert_eq!(cfg.max_connections(), Ok(100));
}

#[test]
fn development_defaults_have_no_fatal_problem() {
    assert!(Config::default().problems().iter().all(|p| !p.fatal));
}

#[test]
fn a_short_encryption_key_is_rejected_without_echoing_it() {
    let cfg = with(|c| c.keys.encryption_key = Some(SecretString::from(B64.encode([7u8; 16]))));
    let p = cfg.problems();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].setting, "HUNTAZE_ENCRYPTION_KEY");
    assert!(!p[0].message.contains(&B64.encode([7u8; 16])));
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let cfg = with(|c| c.keys.secret_key = Some(SecretString::from("hunter2-super-secret")));
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[test]
fn dev_secrets_are_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with(|c| c.data_dir = dir.path().to_path_buf());
    let a = cfg.keys().unwrap();
    let b = cfg.keys().unwrap();
    assert!(a.generated);
    assert_eq!(a.secret, b.secret);
    assert_eq!(a.encryption, b.encryption);
}

/// The problems `config` has with Redis over TLS, as (setting, fatal).
fn redis_tls_problems(config: &Config) -> Vec<(String, String, bool)> {
    config
        .problems()
        .into_iter()
        .filter(|p| p.setting.starts_with("HUNTAZE_REDIS"))
        .map(|p| (p.setting, p.message, p.fatal))
        .collect()
}

#[test]
fn a_redis_ca_file_is_read_at_start_and_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let config = with(|c| {
        c.redis.url = Some("rediss://redis.internal:6380".to_owned().into());
        c.redis.ca_file = Some(missing.clone());
    });
    let problems = redis_tls_problems(&config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "HUNTAZE_REDIS_CA_FILE");
    assert!(problems[0].1.starts_with("cannot be read"), "{problems:?}");
    assert!(problems[0].2, "an unreadable CA file is fatal");
    assert!(
        !problems[0].1.contains("missing.pem"),
        "names the setting, not its value"
    );

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let config = with(|c| {
        c.redis.url = Some("rediss://redis.internal:6380".to_owned().into());
        c.redis.ca_file = Some(empty);
    });
    assert_eq!(
        redis_tls_problems(&config),
        [(
            "HUNTAZE_REDIS_CA_FILE".to_owned(),
            "holds no PEM certificate".to_owned(),
            true
        )]
    );

    let good = dir.path().join("ca.pem");
    std::fs::write(&good, TEST_CA_PEM).unwrap();
    let config = with(|c| {
        c.redis.url = Some("rediss://redis.internal:6380".to_owned().into());
        c.redis.ca_file = Some(good);
    });
    assert_eq!(redis_tls_problems(&config), []);
}

#[test]
fn a_redis_ca_file_with_a_plain_url_is_a_warning() {
    let config = with(|c| {
        c.redis.url = Some("redis://127.0.0.1:6379".to_owned().into());
        c.redis.ca_file = Some("/nonexistent/ca.pem".into());
    });
    assert_eq!(
        redis_tls_problems(&config),
        [(
            "HUNTAZE_REDIS_CA_FILE".to_owned(),
            "has no effect: HUNTAZE_REDIS_URL is not a rediss:// URL".to_owned(),
            false
        )]
    );
    let config = with(|c| c.redis.ca_file = Some("/nonexistent/ca.pem".into()));
    assert!(
        redis_tls_problems(&config)
            .iter()
            .all(|(s, _, fatal)| s == "HUNTAZE_REDIS_CA_FILE" && !fatal)
    );
}

#[test]
fn rediss_without_certificate_checks_is_refused() {
    let config =
        with(|c| c.redis.url = Some("rediss://127.0.0.1:6380/#insecure".to_owned().into()));
    let problems = redis_tls_problems(&config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "HUNTAZE_REDIS_URL");
    assert!(problems[0].2);
    let config = with(|c| c.redis.url = Some("rediss://127.0.0.1:6380".to_owned().into()));
    assert_eq!(redis_tls_problems(&config), []);
}

/// A self-signed P-256 CA certificate (any well-formed one will do: only
/// its parsing is checked here).
const TEST_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBhjCCASugAwIBAgIURwe647PJEqQ0QzMdKHpHce0zrEgwCgYIKoZIzj0EAwIw\n\
FzEVMBMGA1UEAwwMdW5pdC10ZXN0LWNhMCAXDTI2MTIwNjIyMDUwNVoYDzIxMjYx\n\
MTEyMjIwNTA1WjAXMRUwEwYDVQQDDAx1bml0LXRlc3QtY2EwWTATBgcqhkjOPQIB\n\
BggqhkjOPQMBBwNCAASUIUTYMu7Zj6P0O7NZCFCS/EFaPd3tylAA/jaVRaJeJlVW\n\
ue4xbmntIiX1ThxTBujeNnlUje9f0kXkP4xkp0iEo1MwUTAdBgNVHQ4EFgQUO9NH\n\
/5bB1Kgeq7G/hChHIYwSmpcwHwYDVR0jBBgwFoAUO9NH/5bB1Kgeq7G/hChHIYwS\n\
mpcwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEA/gBtbW57Vsx7\n\
D6+Jj55HTc0Q6HvXTMFwtgWqj8HArOsCIQD3D5KftZoqFvQYTvhSBed34VDF81qp\n\
6Dy0h3Luj/BhvA==\n\
-----END CERTIFICATE-----\n";
#[test]
fn production_warns_of_a_networked_database_without_verify_full() {
    let warned = |env: Environment, url: &str| {
        let cfg = with(|c| {
            c.env = env;
            c.database.url = Some(SecretString::from(url.to_owned()));
        });
        assert!(
            !cfg.problems()
                .iter()
                .any(|p| p.message.contains("sslmode=verify-full")),
            "advice, not a problem: a deliberately trusted network must not leave the config component degraded"
        );
        let problems: Vec<_> = cfg
            .advisories()
            .into_iter()
            .filter(|p| p.message.contains("sslmode=verify-full"))
            .collect();
        if let Some(p) = problems.first() {
            assert_eq!(p.setting, "HUNTAZE_DATABASE_URL");
            assert!(!p.fatal, "{p}");
            assert!(
                p.message.ends_with(
                    "without sslmode=verify-full: the connection is not verified \
                     (add sslmode=verify-full&sslrootcert=CA-FILE)"
                ),
                "{p}"
            );
            assert!(!p.message.contains("secret"), "{p}");
        }
        !problems.is_empty()
    };
    let prod = Environment::Production;
    for url in [
        "postgres://app:secret@db.internal/huntaze",
        "postgresql://app@10.0.0.5:5432/huntaze?sslmode=require",
        "postgres://app@db.internal/huntaze?sslmode=verify-ca&sslrootcert=/ca.pem",
        "postgres://app@db.internal/huntaze?sslmode=disable",
        "postgres://app@[2001:db8::1]/huntaze?sslmode=prefer",
        // The query's host is the one connected to.
        "postgres://app@localhost/huntaze?host=db.internal",
        // A later sslmode wins, as in sqlx.
        "postgres://app@db.internal/huntaze?sslmode=verify-full&sslmode=require",
    ] {
        assert!(warned(prod, url), "{url}");
    }
    for url in [
        "postgres://app@db.internal/huntaze?sslmode=verify-full&sslrootcert=/ca.pem",
        "postgres://app@db.internal/huntaze?ssl-mode=VERIFY-FULL",
        "postgres://app@127.0.0.1/huntaze",
        "postgres://app@127.8.9.10:5433/huntaze?sslmode=disable",
        "postgres://app@[::1]/huntaze",
        "postgres://app@localhost/huntaze",
        "postgres://app@LOCALHOST./huntaze",
        "postgres://%2Fvar%2Frun%2Fpostgresql/huntaze",
        "postgres:///huntaze?host=/var/run/postgresql",
        "postgres:///huntaze",
        "sqlite:///var/lib/huntaze/huntaze.db",
    ] {
        assert!(!warned(prod, url), "{url}");
    }
    assert!(!warned(
        Environment::Development,
        "postgres://app@db.internal/huntaze"
    ));
}

#[test]
fn the_redirect_listener_may_not_share_the_main_port_and_an_http_public_url_is_advised_against() {
    let shared = |listen: &str, redirect: &str| {
        let (listen, redirect) = (listen.to_owned(), redirect.to_owned());
        with(move |c| {
            c.server.listen = listen;
            c.server.tls_cert_file = Some("/etc/huntaze/cert.pem".into());
            c.server.tls_key_file = Some("/etc/huntaze/key.pem".into());
            c.server.http_redirect_listen = Some(redirect);
        })
        .problems()
        .iter()
        .any(|p| p.fatal && p.message.contains("must not be the port"))
    };
    assert!(shared("127.0.0.1:8443", "127.0.0.1:8443"));
    assert!(shared("0.0.0.0:8443", "127.0.0.1:8443"));
    assert!(shared("[::]:8443", "[::]:8443"));
    assert!(shared("127.0.0.1:8443", "0.0.0.0:8443"));
    assert!(!shared("127.0.0.1:8443", "127.0.0.1:8080"));
    assert!(!shared("127.0.0.1:8443", "127.0.0.2:8443"));

    let advice = |public: &str| {
        let public = public.to_owned();
        with(move |c| {
            c.server.public_url = public;
            c.server.tls_cert_file = Some("/etc/huntaze/cert.pem".into());
            c.server.tls_key_file = Some("/etc/huntaze/key.pem".into());
        })
        .advisories()
        .into_iter()
        .any(|p| p.setting == "HUNTAZE_PUBLIC_URL" && !p.fatal)
    };
    assert!(advice("http://127.0.0.1:3000"));
    assert!(!advice("https://huntaze.example.com"));
    assert!(
        !with(|c| c.server.public_url = "http://127.0.0.1:3000".into())
            .advisories()
            .iter()
            .any(|p| p.setting == "HUNTAZE_PUBLIC_URL"),
        "plain HTTP with an http public URL is how development runs"
    );
}

#[test]
fn slo_targets_leave_a_budget_and_burn_rate_windows_are_long_then_short() {
    assert!(
        Config::default()
            .problems()
            .iter()
            .all(|p| !p.setting.starts_with("HUNTAZE_SLO_")
                && p.setting != "HUNTAZE_MONITORING_MINUTE_RETENTION_MS"),
        "the defaults are valid"
    );
    let fatal_settings = |c: &Config| -> Vec<String> {
        c.problems()
            .into_iter()
            .filter(|p| p.fatal)
            .map(|p| p.setting)
            .collect()
    };
    let config = with(|c| {
        c.monitoring.slo_availability_percent = 100.0;
        c.monitoring.slo_latency_percent = 0.0;
        c.monitoring.slo_latency_ms = 0;
        c.monitoring.slo_page_burn_rate = f64::NAN;
        c.monitoring.slo_page_short_window_ms = c.monitoring.slo_page_long_window_ms;
        c.monitoring.slo_ticket_short_window_ms = 0;
        c.monitoring.minute_retention_ms = 0;
    });
    let bad = fatal_settings(&config);
    for setting in [
        "HUNTAZE_SLO_AVAILABILITY_PERCENT",
        "HUNTAZE_SLO_LATENCY_PERCENT",
        "HUNTAZE_SLO_LATENCY_MS",
        "HUNTAZE_SLO_PAGE_BURN_RATE",
        "HUNTAZE_SLO_PAGE_SHORT_WINDOW_MS",
        "HUNTAZE_SLO_TICKET_SHORT_WINDOW_MS",
        "HUNTAZE_MONITORING_MINUTE_RETENTION_MS",
    ] {
        assert!(bad.iter().any(|s| s == setting), "{setting} in {bad:?}");
    }
    assert!(!bad.iter().any(|s| s == "HUNTAZE_SLO_TICKET_BURN_RATE"));
    let never_fires = with(|c| {
        c.monitoring.slo_page_burn_rate = 2_000.0;
        c.monitoring.slo_latency_percent = 99.0;
    });
    let problems = never_fires.problems();
    let page = problems
        .iter()
        .find(|p| p.setting == "HUNTAZE_SLO_PAGE_BURN_RATE")
        .expect("a page burn rate above 1000 at 99.9 % is refused");
    assert!(
        page.fatal && page.message.contains("can never fire"),
        "{page:?}"
    );
    let shorter_history = with(|c| c.monitoring.retention_ms = 3_600_000);
    assert!(
        !fatal_settings(&shorter_history)
            .iter()
            .any(|s| s.starts_with("HUNTAZE_MONITORING_")),
        "a retention below the minute retention caps it, not refused"
    );
}
