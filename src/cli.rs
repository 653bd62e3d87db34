//! Command line (clap): `serve` (default), `migrate`, `check-config`,
//! `create-admin`, `tiktok-sandbox`.
//!
//! Standard output carries only the JSON log lines; everything written for
//! a person (reports, confirmations, errors) goes to standard error, so a
//! log collector reading stdout never meets a line it cannot parse.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigProblem};

#[derive(Parser, Debug)]
#[command(name = "huntaze", version, about = "The Huntaze web server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration for its environment and exit (non-zero on
    /// a fatal problem). Prints setting names, never values.
    CheckConfig,
    /// Create an admin in the configured database. The password is read
    /// from standard input. An account that already has this email is left
    /// alone (exit 1) unless `--promote` is given: anyone can register an
    /// address before the operator names it.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (required: passwords never
        /// go on the command line, where `ps` would show them).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Promote the existing account with this email: it becomes an
        /// admin, its password is replaced by the one read from standard
        /// input (whoever registered it can no longer sign in with theirs),
        /// every session it has ends, on every instance sharing the
        /// configured Redis, and its platform connections, pending connect
        /// attempts and display name are removed. Prints when the account
        /// was registered and what was removed.
        #[arg(long)]
        promote: bool,
    },
    /// Run only the TikTok sandbox (TikTok's four endpoints and an
    /// authorize page), for tests and local development.
    TiktokSandbox {
        #[arg(long, default_value = "127.0.0.1:3100")]
        listen: String,
        /// Client key the sandbox accepts.
        #[arg(long, default_value = "sandbox-client-key")]
        client_key: String,
        /// Client secret the sandbox accepts.
        #[arg(long, default_value = "sandbox-client-secret")]
        client_secret: String,
        /// Accept token requests without PKCE.
        #[arg(long)]
        no_pkce: bool,
        /// Expect hex PKCE challenges instead of base64url.
        #[arg(long)]
        hex_challenge: bool,
        /// A redirect URI registered for the client (repeat for more); the
        /// consent page sends the browser back to these only.
        #[arg(
            long = "redirect-uri",
            default_value = "http://127.0.0.1:3000/api/auth/tiktok/callback"
        )]
        redirect_uris: Vec<String>,
        /// Serve `/sandbox/faults`, which lets anyone who can reach the
        /// sandbox make its next calls fail (for test harnesses).
        #[arg(long)]
        fault_controls: bool,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    let command = cli.command.unwrap_or(Command::Serve);
    let (config, mut problems) = match command {
        // The sandbox takes its settings from its own flags.
        Command::TiktokSandbox { .. } => (Config::default(), Vec::new()),
        _ => Config::load(),
    };
    match command {
        Command::CheckConfig | Command::TiktokSandbox { .. } => {}
        // The server reports what it cannot use together with what could
        // not be read, rather than one at a time.
        Command::Serve => problems.extend(config.problems().into_iter().filter(|p| p.fatal)),
        // These leave the rest to the server, but they use the database:
        // never a local file in production by accident.
        Command::Migrate | Command::CreateAdmin { .. } => problems.extend(
            config
                .problems()
                .into_iter()
                .filter(|p| p.fatal && p.setting == "HUNTAZE_DATABASE_URL"),
        ),
    }
    if let Command::CheckConfig = command {
        return check_config(&config, problems);
    }
    if !problems.is_empty() {
        eprintln!("huntaze: the configuration is invalid:");
        print_problems(&problems);
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("huntaze: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => serve(config).await,
            // Answered above, without a runtime.
            Command::CheckConfig => Ok(ExitCode::SUCCESS),
            Command::Migrate => migrate(config).await,
            Command::CreateAdmin { email, promote, .. } => {
                create_admin(config, &email, promote).await
            }
            Command::TiktokSandbox {
                listen,
                client_key,
                client_secret,
                no_pkce,
                hex_challenge,
                redirect_uris,
                fault_controls,
            } => {
                let settings = crate::tiktok::sandbox::SandboxSettings {
                    client_key,
                    client_secret,
                    require_pkce: !no_pkce,
                    challenge_encoding: if hex_challenge {
                        crate::tiktok::sandbox::ChallengeEncoding::Hex
                    } else {
                        crate::tiktok::sandbox::ChallengeEncoding::Base64Url
                    },
                    redirect_uris,
                    fault_controls,
                    ..Default::default()
                };
                tiktok_sandbox(&listen, settings).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "huntaze failed");
            eprintln!("huntaze: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let hangups = crate::app::Hangups::listen()?;
    let app = crate::AppBuilder::new(config).build().await?;
    app.reload_on(hangups);
    let scheme = if app.state().config.server.tls_enabled() {
        "https"
    } else {
        "http"
    };
    eprintln!("huntaze listening on {scheme}://{}", app.local_addr());
    app.run(true).await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    let db =
        crate::store::Db::connect_lazy(&config.database, &config.database_url(), &config.data_dir)?;
    db.migrate().await?;
    eprintln!(
        "migrations applied on {} (latest version {})",
        db.backend().name(),
        db.latest_migration()
    );
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn create_admin(config: Config, email: &str, promote: bool) -> anyhow::Result<ExitCode> {
    use crate::accounts::validate::{Email, Password};
    use crate::audit::{AuditEvent, Origin, Record, Subject};
    use crate::store::users::Inserted;
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("email {}", e.message))?;
    let password = Password::parse_new(password, Some(&email))
        .map_err(|e| anyhow::anyhow!("password {}", e.message))?;
    let db =
        crate::store::Db::connect_lazy(&config.database, &config.database_url(), &config.data_dir)?;
    // The sessions a promotion ends may be cached by running instances:
    // with Redis configured, they hear of it through its invalidation bus.
    let instance = format!("create-admin-{}", uuid::Uuid::new_v4().simple());
    let redis = crate::redis_tier::RedisTier::from_config(
        &config.redis,
        crate::app::shared_lifetimes(&config),
        &instance,
    )?;
    let sessions = crate::sessions::SessionStore::new(db.clone(), &config.database, redis);
    db.migrate().await?;
    let keys = config.keys()?;
    let accounts = crate::accounts::Accounts::new(
        db.clone(),
        std::sync::Arc::clone(&sessions),
        &config.accounts,
        keys.secret,
    )?;
    let hash = accounts
        .hasher()
        .hash(&password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = crate::time_fmt::now_ms();
    let origin = Origin::command_line();
    let user = crate::store::users::UserRow {
        id: uuid::Uuid::now_v7().simple().to_string(),
        email: email.as_str().to_owned(),
        display_name: None,
        password_hash: hash,
        role: crate::accounts::Role::Admin.as_str().into(),
        created_at: now,
    };
    let created = crate::audit::row(Record {
        event: AuditEvent::AdminCreated,
        user_id: Some(&user.id),
        subject: Some(Subject::Email(&user.email)),
        origin: &origin,
        details: None,
    });
    let code = match db.create_admin(&user, &created).await? {
        Inserted::Created => {
            sessions.figures_changed().await;
            eprintln!("{} is an admin (new account)", email.as_str());
            ExitCode::SUCCESS
        }
        Inserted::EmailTaken => {
            let existing = db
                .user_by_email(email.as_str())
                .await?
                .ok_or_else(|| anyhow::anyhow!("{} vanished while it was read", email.as_str()))?;
            if promote {
                promote_existing(
                    &db,
                    &sessions,
                    &config,
                    &existing,
                    &user.password_hash,
                    &origin,
                )
                .await?
            } else {
                let registered = crate::time_fmt::rfc3339_from_ms(existing.created_at);
                eprintln!(
                    "huntaze: an account with {} already exists (registered {registered}, role {}); \
                     nothing was changed.\n\
                     If you are sure it is yours, run again with --promote: it becomes an admin, \
                     its password is replaced by the one given, and all its sessions end.",
                    email.as_str(),
                    existing.role,
                );
                ExitCode::FAILURE
            }
        }
    };
    db.close().await;
    Ok(code)
}

/// `create-admin --promote` on an account that exists: reports what is
/// taken over, what of the previous holder's was removed, and what, if
/// anything, may lag behind.
///
/// A removed platform connection is deleted here, not revoked at the
/// platform: its tokens grant access to the previous holder's own platform
/// account, so leaving them valid there exposes nothing of the operator's,
/// and the previous holder can revoke them from the platform's settings.
/// Revoking would also need the platform client, its credentials and the
/// token keys in a one-off command, and a network call that can fail or
/// hang in the middle of taking the account over.
async fn promote_existing(
    db: &crate::store::Db,
    sessions: &crate::sessions::SessionStore,
    config: &Config,
    existing: &crate::store::users::UserRow,
    password_hash: &str,
    origin: &crate::audit::Origin,
) -> anyhow::Result<ExitCode> {
    let registered = crate::time_fmt::rfc3339_from_ms(existing.created_at);
    let now = crate::time_fmt::now_ms();
    let audit = |p: &crate::store::users::Promotion| {
        let connections: Vec<serde_json::Value> = p
            .connections
            .iter()
            .map(|c| serde_json::json!({ "platform": c.platform, "externalId": c.external_id }))
            .collect();
        crate::audit::row(crate::audit::Record {
            event: crate::audit::AuditEvent::AdminPromoted,
            user_id: Some(&existing.id),
            subject: Some(crate::audit::Subject::Email(&existing.email)),
            origin,
            details: Some(serde_json::json!({
                "registeredAt": registered,
                "previousRole": existing.role,
                "sessionsEnded": p.sessions_ended,
                "connectionsRemoved": connections,
                "pendingConnects": p.pending_connects,
                "displayNameCleared": p.display_name_cleared,
            })),
        })
    };
    let Some(promotion) = db
        .promote_to_admin(&existing.id, password_hash, now, audit)
        .await?
    else {
        anyhow::bail!("{} vanished while it was promoted", existing.email);
    };
    sessions
        .forget_sessions(promotion.ended_sessions.clone())
        .await;
    if !promotion.connections.is_empty() {
        sessions.figures_changed().await;
    }
    let ended = promotion.sessions_ended;
    let mut removed = Vec::new();
    for c in &promotion.connections {
        let (platform, id_name) = match c.platform.as_str() {
            "tiktok" => ("TikTok", "open id"),
            other => (other, "account id"),
        };
        let account = c.external_id.as_deref().unwrap_or("unknown");
        removed.push(format!(
            "its {platform} connection ({id_name} {account}) removed"
        ));
    }
    if promotion.pending_connects > 0 {
        removed.push(format!(
            "{} pending connect attempt(s) removed",
            promotion.pending_connects
        ));
    }
    if promotion.display_name_cleared {
        removed.push("display name cleared".to_owned());
    }
    let removed: String = removed.iter().map(|r| format!("; {r}")).collect();
    eprintln!(
        "{} (registered {registered}, was {}) is an admin; its password is the one given; \
         {ended} session(s) ended{removed}",
        existing.email, existing.role,
    );
    let cache_secs = config.database.query_cache_ttl_ms.div_ceil(1000);
    if ended > 0 && config.database.query_cache_ttl_ms > 0 {
        match sessions.shared() {
            Some(tier) if tier.status().pending_invalidations > 0 => eprintln!(
                "warning: Redis could not be reached: running instances may still accept \
                 those sessions (with their old role) for up to {cache_secs} s \
                 (HUNTAZE_QUERY_CACHE_TTL_MS), until their cached copies expire"
            ),
            Some(_) => {}
            None => eprintln!(
                "note: without HUNTAZE_REDIS_URL running instances cannot be told: they may \
                 still accept those sessions (with their old role) for up to {cache_secs} s \
                 (HUNTAZE_QUERY_CACHE_TTL_MS), until their cached copies expire"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tiktok_sandbox(
    listen: &str,
    settings: crate::tiktok::sandbox::SandboxSettings,
) -> anyhow::Result<ExitCode> {
    let sandbox = crate::tiktok::sandbox::Sandbox::new(settings);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "TikTok sandbox on http://{} (authorize: /v2/auth/authorize/, API: /v2/...)",
        listener.local_addr()?
    );
    crate::tiktok::sandbox::serve(listener, sandbox, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Everything wrong, read and validated together; exit 1 on any fatal one.
///
/// The database's transport settings are checked as start-up checks them
/// (the CA file read, the libpq variables that would change them), but no
/// connection is made: the check runs where the database may not be
/// reachable (a build host, before the network is up) and must not fail
/// there for a reason that is not the configuration's; `migrate` and `serve`
/// connect, and stop on a certificate that does not verify.
fn check_config(config: &Config, mut problems: Vec<ConfigProblem>) -> ExitCode {
    problems.extend(config.problems());
    if let Some(problem) = crate::store::database_url_problem(&config.database_url()) {
        problems.push(ConfigProblem {
            setting: "HUNTAZE_DATABASE_URL".into(),
            message: problem,
            fatal: true,
        });
    }
    problems.extend(config.advisories());
    problems.extend(config.certificate_problems(crate::time_fmt::now_ms() / 1000));
    let env = if config.is_production() {
        "production"
    } else {
        "development"
    };
    if problems.is_empty() {
        eprintln!("configuration OK for {env}");
        return ExitCode::SUCCESS;
    }
    print_problems(&problems);
    if problems.iter().any(|p| p.fatal) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_problems(problems: &[ConfigProblem]) {
    for p in problems {
        eprintln!("{} {p}", if p.fatal { "error:" } else { "warning:" });
    }
}
