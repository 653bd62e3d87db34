//! Configuration: read from an optional `huntaze.toml` and the `HUNTAZE_*`
//! environment (environment wins), then validated once at start.
//!
//! This module owns names, defaults and validation. It never logs or prints a
//! secret value: secrets are [`secrecy::SecretString`]s whose `Debug` is redacted, and
//! problems name settings, never their values.
//!
//! Reading is strict: a name that is not a setting, a value of the wrong type
//! and a configuration file that cannot be read are all problems, collected
//! together rather than stopping at the first, so one run of `check-config`
//! shows everything to fix. A typo must never leave a default silently in
//! place (a misspelt database URL would otherwise serve from a local file).
//!
//! # From a setting to its field
//!
//! Settings are flat (`HUNTAZE_TIKTOK_CLIENT_KEY`, or `tiktok_client_key` in
//! the file) while [`Config`] is in sections, one per service, so each
//! service is handed only its own. The rule: the setting's name without
//! `HUNTAZE_`, lowercased, is a field's serde name in [`sections`] (or one
//! of [`Config`]'s own few: `env`, `data_dir`, `instance_id`). Where the
//! Rust field drops the section's prefix it carries
//! `#[serde(rename = "tiktok_client_key")]`, so searching for the lowercase
//! name finds the field (`config.tiktok.client_key`). The loader derives its
//! table of names from those serde field lists ([`load`]); there is no
//! second list to keep in step.

mod checks;
mod keys;
mod load;
pub(crate) mod sections;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_checks;

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::ExposeSecret;
use serde::Deserialize;

pub(crate) use keys::Keys;
pub(crate) use keys::create_private_dir;
pub use sections::RedisSettings;
pub(crate) use sections::{
    AccountSettings, DatabaseSettings, HealthSettings, KeySettings, LandingSettings,
    MonitoringSettings, ServerSettings, TikTokSettings,
};

/// Which rules apply: production makes missing secrets fatal and never runs
/// the TikTok sandbox.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

/// Every setting of the server, in sections (see the module header for how
/// a setting's name leads to its field).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub env: Environment,
    pub data_dir: PathBuf,
    /// This instance's name in shared monitoring history (default: host,
    /// process id and a random suffix).
    pub instance_id: Option<String>,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub keys: KeySettings,
    pub accounts: AccountSettings,
    pub tiktok: TikTokSettings,
    pub health: HealthSettings,
    pub monitoring: MonitoringSettings,
    pub landing: LandingSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            data_dir: PathBuf::from("./data"),
            instance_id: None,
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            redis: RedisSettings::default(),
            keys: KeySettings::default(),
            accounts: AccountSettings::default(),
            tiktok: TikTokSettings::default(),
            health: HealthSettings::default(),
            monitoring: MonitoringSettings::default(),
            landing: LandingSettings::default(),
        }
    }
}

/// One thing wrong with the configuration. `setting` is the environment
/// variable's full name, or the key and file for a problem in the file; the
/// message never contains the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub setting: String,
    pub message: String,
    /// Fatal problems stop the server from starting; the others degrade the
    /// `config` health component.
    pub fatal: bool,
}

impl ConfigProblem {
    fn fatal(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
            fatal: true,
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

/// What is derived from more than one section lives here, so the caller
/// that assembles the services computes it and hands each service a value.
impl Config {
    /// A name for this instance when `HUNTAZE_INSTANCE_ID` is unset: host,
    /// process id and a random suffix (unique across restarts).
    pub fn default_instance_id() -> String {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!(
            "{}-{}-{}",
            host.trim(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        )
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigProblem> {
        self.server.listen.parse().map_err(|_| ConfigProblem {
            setting: "HUNTAZE_LISTEN".into(),
            message: "must be an address such as 127.0.0.1:3000".into(),
            fatal: true,
        })
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose_secret().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("huntaze.db").display()),
        }
    }

    /// The OAuth redirect URI: configured, or derived from the public URL.
    pub fn tiktok_redirect_uri(&self) -> String {
        self.tiktok.redirect_uri.clone().unwrap_or_else(|| {
            format!(
                "{}/api/auth/tiktok/callback",
                self.server.public_url.trim_end_matches('/')
            )
        })
    }
}
