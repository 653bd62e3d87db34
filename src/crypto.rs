//! [`TokenCipher`]: third-party tokens at rest, sealed with
//! AES-256-GCM under a key id so keys can rotate: `v1.<key id>.<base64url(nonce ‖ ciphertext)>`.
//! The key id is also bound as associated data, so a ciphertext cannot be
//! replayed under another key's label.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

pub struct TokenCipher {
    current_id: String,
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCipher")
            .field("current_id", &self.current_id)
            .finish_non_exhaustive()
    }
}

/// An earlier encryption key, kept so that what it sealed still opens.
#[derive(Clone)]
pub struct PreviousKey {
    /// The key's fingerprint, as ciphertexts name it.
    pub id: String,
    pub key: [u8; 32],
}

impl TokenCipher {
    /// `current` seals; `previous` keys still open old ciphertexts.
    pub fn new(current_id: &str, current: &[u8; 32], previous: &[PreviousKey]) -> Self {
        let mut keys = vec![(current_id.to_owned(), Aes256Gcm::new(current.into()))];
        for PreviousKey { id, key } in previous {
            keys.push((id.clone(), Aes256Gcm::new(key.into())));
        }
        Self {
            current_id: current_id.to_owned(),
            keys,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.current_id
    }

    pub fn seal(&self, plaintext: &SecretString) -> anyhow::Result<String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[0].1;
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad: self.current_id.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("token encryption failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(format!("v1.{}.{}", self.current_id, B64URL.encode(blob)))
    }

    pub fn open(&self, sealed: &str) -> anyhow::Result<SecretString> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("unrecognized token ciphertext");
        };
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| anyhow::anyhow!("token sealed with unknown key id {id}"))?;
        let blob = B64URL.decode(body)?;
        anyhow::ensure!(blob.len() > 12, "token ciphertext too short");
        let (nonce, ct) = blob.split_at(12);
        let nonce = Nonce::try_from(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let pt = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ct,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("token ciphertext failed authentication"))?;
        Ok(SecretString::from(String::from_utf8(pt)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_without_the_plaintext_in_the_ciphertext() {
        let c = TokenCipher::new("k1", &[1u8; 32], &[]);
        let sealed = c.seal(&SecretString::from("act.secret-token")).unwrap();
        assert!(sealed.starts_with("v1.k1."));
        assert!(!sealed.contains("secret-token"));
        assert_eq!(c.open(&sealed).unwrap().expose_secret(), "act.secret-token");
    }

    #[test]
    fn tampering_and_unknown_keys_are_rejected() {
        let c = TokenCipher::new("k1", &[1u8; 32], &[]);
        let sealed = c.seal(&SecretString::from("x")).unwrap();
        let mut bad = sealed.clone();
        bad.pop();
        bad.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(c.open(&bad).is_err());
        assert!(c.open(&sealed.replace("v1.k1.", "v1.k2.")).is_err());
        assert!(c.open("garbage").is_err());
    }

    #[test]
    fn old_ciphertexts_open_after_rotation() {
        let old = TokenCipher::new("k1", &[1u8; 32], &[]);
        let sealed = old.seal(&SecretString::from("t")).unwrap();
        let rotated = TokenCipher::new(
            "k2",
            &[2u8; 32],
            &[PreviousKey {
                id: "k1".into(),
                key: [1u8; 32],
            }],
        );
        assert_eq!(rotated.open(&sealed).unwrap().expose_secret(), "t");
        assert!(
            rotated
                .seal(&SecretString::from("t"))
                .unwrap()
                .starts_with("v1.k2.")
        );
    }
}
