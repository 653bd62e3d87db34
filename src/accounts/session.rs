//! Session tokens and the CSRF token bound to them.
//!
//! The token is 256 random bits; the database keeps its SHA-256. The CSRF
//! token is an HMAC of the session's hash under the server secret:
//! stateless to verify, different per session, useless without the session
//! cookie (there is no CSRF cookie). How the token travels (the cookie) is
//! the edge's business: `middleware::session_cookie`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes, base64url (43 characters).
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    B64URL.encode(bytes)
}

pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn csrf_token(secret: &[u8], token_hash: &str) -> String {
    // HMAC accepts keys of any length (new_from_slice cannot fail for it);
    // the configuration guarantees ≥ 32 bytes.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"csrf:");
    mac.update(token_hash.as_bytes());
    B64URL.encode(mac.finalize().into_bytes())
}

pub(crate) fn verify_csrf(secret: &[u8], token_hash: &str, presented: &str) -> bool {
    let expected = csrf_token(secret, token_hash);
    !presented.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let a = new_token();
        assert_eq!(B64URL.decode(&a).unwrap().len(), 32);
        assert_ne!(a, new_token());
    }

    #[test]
    fn csrf_tokens_verify_only_for_their_session() {
        let secret = [9u8; 32];
        let t = csrf_token(&secret, "abc");
        assert!(verify_csrf(&secret, "abc", &t));
        assert!(!verify_csrf(&secret, "abd", &t));
        assert!(!verify_csrf(&secret, "abc", ""));
        assert!(!verify_csrf(&[8u8; 32], "abc", &t));
    }
}
