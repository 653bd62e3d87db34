//! The production health checks: `database`, `config`, `auth`, `external`.

use std::time::Duration;

use std::sync::Arc;

use serde_json::json;

use super::{CheckOutcome, HealthCheck, Status};
use crate::accounts::{Accounts, session};
use crate::config::{ConfigProblem, Keys};
use crate::store::Db;

/// Round trip, pool occupancy and migration state of the database.
pub(crate) struct DatabaseCheck {
    pub db: Db,
    /// Its query cache's counts go in the details.
    pub sessions: Arc<crate::sessions::SessionStore>,
    pub slow: Duration,
}

#[async_trait::async_trait]
impl HealthCheck for DatabaseCheck {
    fn name(&self) -> &'static str {
        "database"
    }
    fn critical(&self) -> bool {
        true
    }
    async fn check(&self) -> CheckOutcome {
        let backend = self.db.backend().name();
        // Occupancy before the probe takes a connection of its own.
        let before = self.db.stats();
        let saturated = before.idle == 0 && before.size >= before.max;
        let latency = match self.db.ping().await {
            Ok(latency) => latency,
            Err(sqlx::Error::PoolTimedOut) if saturated => {
                // Every connection is busy: the database answers, we are
                // short of connections.
                return CheckOutcome::degraded("connection pool saturated")
                    .with_details(json!({ "backend": backend, "pool": self.db.stats() }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "database health probe failed");
                let message = self
                    .db
                    .tls_failure(&e)
                    .unwrap_or_else(|| "database unreachable".to_owned());
                return CheckOutcome::unhealthy(message)
                    .with_details(json!({ "backend": backend, "pool": self.db.stats() }));
            }
        };
        let applied = self.db.applied_migration().await.unwrap_or(0);
        let latest = self.db.latest_migration();
        let stats = self.db.stats();
        let details = json!({
            "backend": backend,
            "roundTripMs": latency.as_secs_f64() * 1000.0,
            "pool": stats,
            "migration": { "applied": applied, "latest": latest, "current": applied >= latest },
            "retries": self.db.retries().total(),
            "queryCache": self.sessions.query_cache_stats(),
        });
        let outcome = if applied < latest || !self.db.is_migrated() {
            CheckOutcome::unhealthy("migrations not applied")
        } else if latency > self.slow {
            CheckOutcome::degraded(format!("slow round trip ({} ms)", latency.as_millis()))
        } else if saturated || (stats.waiting > 0 && stats.idle == 0 && stats.size >= stats.max) {
            CheckOutcome::degraded("connection pool saturated")
        } else {
            CheckOutcome::healthy()
        };
        outcome.with_details(details)
    }
}

/// Whether every setting the environment requires is present and valid,
/// and how long the serving certificate has left. Reports setting names
/// only, never values.
pub(crate) struct ConfigCheck {
    pub problems: Vec<ConfigProblem>,
    pub tiktok_mode: &'static str,
    pub environment: &'static str,
    /// The HTTPS listener's pair, read at every check: a reload (SIGHUP)
    /// replaces it inside the resolver and shows at the next sample.
    pub certificate: Option<Arc<crate::tls::CertResolver>>,
}

#[async_trait::async_trait]
impl HealthCheck for ConfigCheck {
    fn name(&self) -> &'static str {
        "config"
    }
    fn critical(&self) -> bool {
        true
    }
    async fn check(&self) -> CheckOutcome {
        let served = self.certificate.as_ref().map(|r| r.current());
        self.outcome(
            served.as_deref().map(|c| (c.not_after, c.subject.as_str())),
            crate::time_fmt::now_ms() / 1000,
        )
    }
}

impl ConfigCheck {
    /// The outcome with the served certificate's expiry and subject, if
    /// any, at `now` (Unix seconds).
    fn outcome(&self, certificate: Option<(i64, &str)>, now: i64) -> CheckOutcome {
        let fatal: Vec<_> = self.problems.iter().filter(|p| p.fatal).collect();
        let warnings: Vec<_> = self.problems.iter().filter(|p| !p.fatal).collect();
        let mut details = json!({
            "environment": self.environment,
            "tiktok": self.tiktok_mode,
            "problems": self.problems.iter().map(|p| json!({
                "setting": p.setting, "message": p.message, "fatal": p.fatal,
            })).collect::<Vec<_>>(),
        });
        let mut status = Status::Healthy;
        let mut messages = Vec::new();
        if !fatal.is_empty() {
            status = Status::Unhealthy;
            messages.push(format!("{} invalid setting(s)", fatal.len()));
        } else if !warnings.is_empty() {
            status = Status::Degraded;
            messages.extend(warnings.iter().map(|p| p.to_string()));
        }
        if let Some((not_after, subject)) = certificate {
            let (cert_status, message, cert_details) = certificate_health(not_after, subject, now);
            status = status.max(cert_status);
            messages.extend(message);
            details["certificate"] = cert_details;
        }
        let outcome = CheckOutcome {
            status,
            message: (!messages.is_empty()).then(|| messages.join("; ")),
            details: None,
        };
        let outcome = if outcome.message.is_none() && self.tiktok_mode == "sandbox" {
            outcome.with_message("TikTok runs against the built-in sandbox")
        } else {
            outcome
        };
        outcome.with_details(details)
    }
}

/// The serving certificate's status, message and details at `now` (Unix
/// seconds): unhealthy once expired (every handshake fails for clients
/// that check dates), degraded with fewer than
/// [`crate::tls::EXPIRY_WARNING_DAYS`] whole days left.
fn certificate_health(
    not_after: i64,
    subject: &str,
    now: i64,
) -> (Status, Option<String>, serde_json::Value) {
    let days = (not_after - now).div_euclid(86_400);
    let at = crate::time_fmt::rfc3339_from_ms(not_after.saturating_mul(1000));
    let details = json!({
        "subject": subject,
        "notAfter": at,
        "daysToExpiry": days,
    });
    if now >= not_after {
        (
            Status::Unhealthy,
            Some(format!("the serving certificate expired at {at}")),
            details,
        )
    } else if days < crate::tls::EXPIRY_WARNING_DAYS {
        (
            Status::Degraded,
            Some(format!(
                "the serving certificate expires in {days} day(s), at {at}: renew it \
                 (fewer than {} days left)",
                crate::tls::EXPIRY_WARNING_DAYS
            )),
            details,
        )
    } else {
        (Status::Healthy, None, details)
    }
}

/// The keys as configured (present, long enough, not patterned), a CSRF
/// sign/verify round trip through the verifier requests use (it must accept
/// its own token and refuse another session's), and a write/read/delete
/// probe of the session store.
pub(crate) struct AuthCheck {
    pub keys: Keys,
    pub db: Db,
    pub accounts: Arc<Accounts>,
}

#[async_trait::async_trait]
impl HealthCheck for AuthCheck {
    fn name(&self) -> &'static str {
        "auth"
    }
    fn critical(&self) -> bool {
        false
    }
    async fn check(&self) -> CheckOutcome {
        let present = !self.keys.secret.is_empty() && self.keys.encryption.iter().any(|b| *b != 0);
        let strong = strong_key(&self.keys.secret) && strong_key(&self.keys.encryption);
        let round_trip = csrf_round_trip(
            |hash| self.accounts.csrf_for(hash),
            |hash, token| self.accounts.verify_csrf_for(hash, token),
        );
        let store = self.db.probe_session_store().await;
        if let Err(e) = &store {
            tracing::warn!(error = %e, "session store probe failed");
        }
        let details = json!({
            "keysPresent": present,
            "keysStrong": strong,
            "keysGenerated": self.keys.generated,
            "signVerify": round_trip.is_ok(),
            "sessionStore": store.is_ok(),
        });
        let outcome = if !present {
            CheckOutcome::unhealthy("signing or encryption key missing")
        } else if let Err(why) = round_trip {
            CheckOutcome::unhealthy(format!("CSRF sign/verify round trip failed: {why}"))
        } else if store.is_err() {
            CheckOutcome::unhealthy("session store unavailable")
        } else if !strong {
            CheckOutcome::degraded("signing or encryption key is weak")
        } else {
            CheckOutcome::healthy()
        };
        outcome.with_details(details)
    }
}

/// At least 32 bytes and not patterned: 32 random bytes take ~30 distinct
/// values (fewer than 16 has a probability below 10⁻²⁰), a key typed by hand
/// or repeated from a short string takes few.
fn strong_key(key: &[u8]) -> bool {
    let distinct = key.iter().collect::<std::collections::HashSet<_>>().len();
    key.len() >= 32 && distinct >= 16
}

/// Signs a CSRF token for a fresh session hash with `sign` and checks that
/// `verify` accepts it, and refuses it for another session and refuses an
/// empty token: a verifier that rejects everything or accepts everything
/// fails here.
fn csrf_round_trip(
    sign: impl Fn(&str) -> String,
    verify: impl Fn(&str, &str) -> bool,
) -> Result<(), &'static str> {
    let hash = session::hash_token(&session::new_token());
    let other = session::hash_token(&session::new_token());
    let token = sign(&hash);
    if !verify(&hash, &token) {
        return Err("a freshly signed token was refused");
    }
    if verify(&other, &token) {
        return Err("a token verified for another session");
    }
    if verify(&hash, "") {
        return Err("an empty token verified");
    }
    Ok(())
}

/// External dependencies: TikTok (mode, reachability, circuit state), and
/// Redis and the alert webhook when configured.
pub(crate) struct ExternalCheck {
    pub tiktok: Arc<crate::tiktok::TikTok>,
    pub redis: Option<Arc<crate::redis_tier::RedisTier>>,
    pub webhook_configured: bool,
}

#[async_trait::async_trait]
impl HealthCheck for ExternalCheck {
    fn name(&self) -> &'static str {
        "external"
    }
    fn critical(&self) -> bool {
        false
    }
    async fn check(&self) -> CheckOutcome {
        use crate::circuit::CircuitState;
        let mut status = Status::Healthy;
        let mut messages = Vec::new();
        let redis = match &self.redis {
            None => json!({ "configured": false }),
            Some(tier) => match tier.ping().await {
                Ok(rtt) => json!({
                    "configured": true,
                    "status": "healthy",
                    "roundTripMs": rtt.as_secs_f64() * 1000.0,
                    "mode": if tier.is_up() { "shared" } else { "local" },
                    "tier": tier.status(),
                }),
                Err(e) => {
                    status = Status::Degraded;
                    // A certificate that does not verify is not an outage:
                    // the operator's fix is elsewhere, so the reason shows.
                    messages.push(if e.starts_with("TLS") {
                        format!("redis {e}; rate limits and caches are per instance")
                    } else {
                        "redis unreachable: rate limits and caches are per instance".to_owned()
                    });
                    tracing::warn!(error = %e, "redis health probe failed");
                    json!({
                        "configured": true,
                        "status": "unhealthy",
                        "mode": "local",
                        "reason": e,
                        "tier": tier.status(),
                    })
                }
            },
        };
        let mode = self.tiktok.mode();
        let circuit = self.tiktok.circuit_state();
        let reachable = self.tiktok.reachable().await;
        match (&reachable, circuit) {
            (_, Some(CircuitState::Open)) => {
                status = status.max(Status::Degraded);
                messages.push("TikTok circuit open".into());
            }
            (Some(Err(why)), _) => {
                status = Status::Unhealthy;
                messages.push(format!("TikTok API {why}"));
            }
            (_, Some(CircuitState::HalfOpen)) => {
                status = status.max(Status::Degraded);
                messages.push("TikTok circuit half-open".into());
            }
            _ => {}
        }
        if mode == crate::tiktok::Mode::Unavailable {
            status = status.max(Status::Degraded);
            messages.push("TikTok credentials missing: connect flow unavailable".into());
        }
        CheckOutcome {
            status,
            message: (!messages.is_empty()).then(|| messages.join("; ")),
            details: Some(json!({
                "tiktok": {
                    "mode": mode.as_str(),
                    "circuit": circuit.map(|c| c.as_str()),
                    "reachable": reachable.as_ref().map(|r| r.is_ok()),
                },
                "redis": redis,
                "alertWebhook": { "configured": self.webhook_configured },
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_trip_fails_for_a_verifier_that_refuses_or_accepts_everything() {
        let secret = [7u8; 32];
        let sign = |h: &str| session::csrf_token(&secret, h);
        assert_eq!(
            csrf_round_trip(sign, |h, t| session::verify_csrf(&secret, h, t)),
            Ok(())
        );
        assert!(csrf_round_trip(sign, |_, _| false).is_err());
        assert!(csrf_round_trip(sign, |_, _| true).is_err());
        // signed with one key, verified with another
        assert!(csrf_round_trip(sign, |h, t| session::verify_csrf(&[8u8; 32], h, t)).is_err());
    }

    #[test]
    fn the_certificate_degrades_under_two_weeks_and_is_unhealthy_once_expired() {
        const DAY: i64 = 86_400;
        let now = 1_700_000_000;
        let status = |left: i64| certificate_health(now + left, "CN=x", now).0;
        assert_eq!(status(90 * DAY), Status::Healthy);
        assert_eq!(status(14 * DAY), Status::Healthy);
        assert_eq!(status(14 * DAY - 1), Status::Degraded);
        assert_eq!(status(1), Status::Degraded);
        assert_eq!(status(0), Status::Unhealthy);
        assert_eq!(status(-DAY), Status::Unhealthy);
        let (_, message, details) = certificate_health(now + 10 * DAY - 60, "CN=x", now);
        assert_eq!(details["daysToExpiry"], 9);
        assert_eq!(details["subject"], "CN=x");
        assert_eq!(details["notAfter"], "2023-11-24T22:12:20.000Z");
        let message = message.unwrap();
        assert!(message.contains("expires in 9 day(s)"), "{message}");
        let (_, message, _) = certificate_health(now - 1, "CN=x", now);
        assert!(message.unwrap().contains("expired"));
    }

    fn config_check(problems: Vec<ConfigProblem>) -> ConfigCheck {
        ConfigCheck {
            problems,
            tiktok_mode: "configured",
            environment: "production",
            certificate: None,
        }
    }

    #[test]
    fn an_expired_certificate_makes_config_unhealthy_beside_the_setting_problems() {
        let now = 1_700_000_000;
        let warning = ConfigProblem {
            setting: "HUNTAZE_TIKTOK_CLIENT_KEY".into(),
            message: "is not set".into(),
            fatal: false,
        };
        let check = config_check(vec![warning]);
        let out = check.outcome(Some((now - 60, "CN=www.example.com")), now);
        assert_eq!(out.status, Status::Unhealthy);
        let message = out.message.unwrap();
        assert!(
            message.contains("HUNTAZE_TIKTOK_CLIENT_KEY: is not set")
                && message.contains("the serving certificate expired at"),
            "{message}"
        );
        let details = out.details.unwrap();
        assert_eq!(
            details["problems"][0]["setting"],
            "HUNTAZE_TIKTOK_CLIENT_KEY"
        );
        assert_eq!(details["environment"], "production");
        assert_eq!(details["tiktok"], "configured");
        assert_eq!(details["certificate"]["daysToExpiry"], -1);
        assert_eq!(details["certificate"]["subject"], "CN=www.example.com");

        // A healthy certificate leaves the status to the settings; none
        // served: no certificate in the details.
        let check = config_check(Vec::new());
        let out = check.outcome(Some((now + 30 * 86_400, "CN=x")), now);
        assert_eq!((out.status, out.message), (Status::Healthy, None));
        assert_eq!(out.details.unwrap()["certificate"]["daysToExpiry"], 30);
        let out = check.outcome(None, now);
        assert_eq!(out.status, Status::Healthy);
        assert!(out.details.unwrap().get("certificate").is_none());
        let out = check.outcome(Some((now + 86_400, "CN=x")), now);
        assert_eq!(out.status, Status::Degraded);
    }

    #[test]
    fn short_or_patterned_keys_are_weak() {
        let random: Vec<u8> = (0..32u8)
            .map(|i| i.wrapping_mul(97).wrapping_add(13))
            .collect();
        assert!(strong_key(&random));
        assert!(!strong_key(&random[..31]));
        assert!(!strong_key(&[0u8; 32]));
        assert!(!strong_key(&b"passwordpasswordpasswordpassword"[..]));
    }
}
