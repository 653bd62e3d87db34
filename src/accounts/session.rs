//! Session tokens, their cookie, and the CSRF token bound to them.
//!
//! The token is 256 random bits, sent only in an `HttpOnly`, `SameSite=Lax`
//! cookie (`Secure` over HTTPS); the database keeps its SHA-256. The CSRF
//! token is an HMAC of the session's hash under the server secret: stateless
//! to verify, different per session, useless without the cookie.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "huntaze_session";

/// 32 random bytes, base64url (43 characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    B64URL.encode(bytes)
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn csrf_token(secret: &[u8], token_hash: &str) -> String {
    // HMAC accepts keys of any length; the configuration guarantees ≥ 32 bytes.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"csrf:");
    mac.update(token_hash.as_bytes());
    B64URL.encode(mac.finalize().into_bytes())
}

pub fn verify_csrf(secret: &[u8], token_hash: &str, presented: &str) -> bool {
    let expected = csrf_token(secret, token_hash);
    !presented.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// The session token from the `Cookie` header, if it is well-formed (a
/// forged or truncated value is treated as absent, never as an error).
pub fn token_from(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

pub fn set_cookie(token: &str, secure: bool, max_age_secs: i64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
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

    #[test]
    fn malformed_cookies_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("huntaze_session=short; other=1"),
        );
        assert_eq!(token_from(&h), None);
        let good = new_token();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; huntaze_session={good}")).unwrap(),
        );
        assert_eq!(token_from(&h), Some(good));
    }
}
