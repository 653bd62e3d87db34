//! Key material: decoded from the configuration, or generated once for
//! development.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::Config;
use crate::crypto::PreviousKey;

/// Key material derived from the configuration, checked for strength.
#[derive(Clone)]
pub struct Keys {
    /// HMAC key for session and CSRF tokens (≥ 32 bytes).
    pub secret: Vec<u8>,
    /// AES-256-GCM key for tokens at rest.
    pub encryption: [u8; 32],
    /// Identifies `encryption` in ciphertexts so keys can rotate.
    pub encryption_key_id: String,
    /// Earlier encryption keys with their ids: they open, never seal.
    pub previous_encryption: Vec<PreviousKey>,
    /// True when the keys were generated for development.
    pub generated: bool,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("encryption_key_id", &self.encryption_key_id)
            .field("generated", &self.generated)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The key material: from the configuration, or in development generated
    /// once and kept in `<data dir>/dev-secrets.json` so sessions and
    /// encrypted tokens survive restarts.
    pub fn keys(&self) -> anyhow::Result<Keys> {
        let configured = (
            self.keys.secret_key.as_ref().and_then(decode_key),
            self.keys.encryption_key.as_ref().and_then(decode_key),
        );
        let (secret, encryption, generated) = match configured {
            (Some(s), Some(e)) => (s, e, false),
            _ if self.is_production() => anyhow::bail!(
                "HUNTAZE_SECRET_KEY and HUNTAZE_ENCRYPTION_KEY are required in production"
            ),
            (s, e) => {
                let dev = load_or_create_dev_secrets(&self.data_dir)?;
                (s.unwrap_or(dev.0), e.unwrap_or(dev.1), true)
            }
        };
        anyhow::ensure!(
            secret.len() >= 32,
            "HUNTAZE_SECRET_KEY is shorter than 32 bytes"
        );
        let encryption: [u8; 32] = encryption
            .try_into()
            .map_err(|_| anyhow::anyhow!("HUNTAZE_ENCRYPTION_KEY is not 32 bytes"))?;
        let previous_encryption = self
            .keys
            .encryption_previous_keys
            .as_ref()
            .map(|keys| {
                keys.expose_secret()
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| {
                        let key: [u8; 32] = B64
                            .decode(k)
                            .ok()
                            .and_then(|b| b.try_into().ok())
                            .ok_or_else(|| {
                                anyhow::anyhow!(
                                    "HUNTAZE_ENCRYPTION_PREVIOUS_KEYS holds a key that is not 32 bytes"
                                )
                            })?;
                        Ok(PreviousKey {
                            id: key_id(&key),
                            key,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Keys {
            secret,
            encryption_key_id: key_id(&encryption),
            encryption,
            previous_encryption,
            generated,
        })
    }
}

/// A key's id is a fingerprint, not the key: it lets a ciphertext name the
/// key that sealed it without revealing anything about it.
fn key_id(key: &[u8; 32]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key)[..4])
}

pub(super) fn decode_key(key: &SecretString) -> Option<Vec<u8>> {
    B64.decode(key.expose_secret().trim()).ok()
}

fn load_or_create_dev_secrets(dir: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    use anyhow::Context as _;
    #[derive(serde::Serialize, Deserialize)]
    struct DevSecrets {
        secret_key: String,
        encryption_key: String,
    }
    let path = dir.join("dev-secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(s) = serde_json::from_str::<DevSecrets>(&text)
        && let (Ok(a), Ok(b)) = (B64.decode(&s.secret_key), B64.decode(&s.encryption_key))
    {
        return Ok((a, b));
    }
    create_private_dir(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let mut secret = vec![0u8; 32];
    let mut enc = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    rand::rng().fill_bytes(&mut enc);
    let body = serde_json::to_string_pretty(&DevSecrets {
        secret_key: B64.encode(&secret),
        encryption_key: B64.encode(&enc),
    })?;
    write_private(&path, body.as_bytes())
        .with_context(|| format!("writing the development secrets {}", path.display()))?;
    Ok((secret, enc))
}

fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(body)
}

/// Creates `dir` and its missing parents readable by this user only: the
/// data directory holds the SQLite database (password hashes, sealed
/// tokens) and the development secrets. A directory that exists is left as
/// its owner set it.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
