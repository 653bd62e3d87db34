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
    /// Create an admin, or promote an existing user, in the configured
    /// database. The password is read from standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (required: passwords never
        /// go on the command line, where `ps` would show them).
        #[arg(long, required = true)]
        password_stdin: bool,
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
            Command::CreateAdmin { email, .. } => create_admin(config, &email).await,
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
    let app = crate::AppBuilder::new(config).build().await?;
    eprintln!("huntaze listening on http://{}", app.local_addr());
    app.run(true).await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    let db = crate::store::Db::connect_lazy(&config)?;
    db.migrate().await?;
    eprintln!(
        "migrations applied on {} (latest version {})",
        db.backend().name(),
        db.latest_migration()
    );
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn create_admin(config: Config, email: &str) -> anyhow::Result<ExitCode> {
    use crate::accounts::validate::{Email, Password};
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("email {}", e.message))?;
    let password = Password::parse_new(password, Some(&email))
        .map_err(|e| anyhow::anyhow!("password {}", e.message))?;
    let db = crate::store::Db::connect_lazy(&config)?;
    db.migrate().await?;
    let keys = config.keys()?;
    let accounts = crate::accounts::Accounts::new(db.clone(), &config, keys.secret)?;
    let hash = accounts
        .hasher()
        .hash(&password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = crate::time_fmt::now_ms();
    db.upsert_admin(&crate::store::users::UserRow {
        id: uuid::Uuid::now_v7().simple().to_string(),
        email: email.as_str().to_owned(),
        display_name: None,
        password_hash: hash,
        role: "admin".into(),
        created_at: now,
    })
    .await?;
    eprintln!("{} is an admin", email.as_str());
    db.close().await;
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
fn check_config(config: &Config, mut problems: Vec<ConfigProblem>) -> ExitCode {
    problems.extend(config.problems());
    problems.extend(config.advisories());
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
