//! The session cookie: how a session token travels.
//!
//! The token is sent only in an `HttpOnly`, `SameSite=Lax` cookie (the
//! token itself is `accounts::session`'s).
//!
//! Over HTTPS the cookie is `__Host-huntaze_session`: browsers accept a
//! `__Host-` cookie only when it is `Secure`, has `Path=/` and no `Domain`,
//! and comes from the host itself, so a sibling subdomain cannot plant one
//! (it can plant `huntaze_session; Domain=.example.com`, which is then
//! ignored). Over plain HTTP the prefix is unavailable; there, a planted
//! cookie of the same name arrives next to ours, so every well-formed value
//! is tried and a valid one wins.

use axum::http::{HeaderMap, HeaderValue, header};

/// The session cookie's name over plain HTTP.
pub(crate) const COOKIE: &str = "huntaze_session";
/// The session cookie's name over HTTPS.
pub(crate) const HOST_COOKIE: &str = "__Host-huntaze_session";

/// Session tokens looked up for one request at most: enough for a planted
/// cookie or two beside the real one, without letting one request with a
/// long `Cookie` header cost hundreds of session lookups.
const MAX_CANDIDATES: usize = 4;

/// The session cookie's name for a public URL that is HTTPS (`secure`) or
/// not.
pub(crate) fn cookie_name(secure: bool) -> &'static str {
    if secure { HOST_COOKIE } else { COOKIE }
}

/// The session tokens the `Cookie` header offers under the scheme's cookie
/// name, in the order sent, without duplicates, at most [`MAX_CANDIDATES`].
/// A forged or truncated value is skipped (treated as absent, never as an
/// error). The caller uses the first that names a live session: a browser
/// sends every cookie whose domain and path match, so one planted by
/// another subdomain may come first, and it must not shadow ours.
///
/// The header is split on `;` as bytes: other cookies on the domain may
/// hold bytes that are not visible ASCII (a UTF-8 preference, say), which
/// makes the header as a whole fail `to_str`; only those pairs are skipped,
/// so someone else's cookie cannot sign the user out.
pub(crate) fn tokens_from(headers: &HeaderMap, secure: bool) -> Vec<String> {
    let name = cookie_name(secure);
    let mut tokens: Vec<String> = Vec::new();
    let offered = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value)
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    for value in offered {
        if tokens.len() == MAX_CANDIDATES {
            break;
        }
        if !tokens.iter().any(|t| t == value) {
            tokens.push(value.to_owned());
        }
    }
    tokens
}

/// `Path=/` and no `Domain` in both schemes (a host-only cookie); over
/// HTTPS also `Secure` and the `__Host-` name, which requires exactly that.
pub(crate) fn set_cookie(token: &str, secure: bool, max_age_secs: i64) -> HeaderValue {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(crate) fn clear_cookie(secure: bool) -> HeaderValue {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::session::new_token;

    fn cookies(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn malformed_cookies_are_ignored() {
        assert!(tokens_from(&cookies("huntaze_session=short; other=1"), false).is_empty());
        let good = new_token();
        assert_eq!(
            tokens_from(&cookies(&format!("x=1; huntaze_session={good}")), false),
            [good]
        );
    }

    #[test]
    fn one_cookie_that_is_not_ascii_does_not_hide_the_others() {
        let good = new_token();
        let mut h = HeaderMap::new();
        let raw = format!("pref=caf\u{e9}; huntaze_session={good}; lang=fr");
        let mut bytes = raw.into_bytes();
        // a lone 0xff byte is not UTF-8 either: both kinds are skipped
        bytes.extend_from_slice(b"; x=\xff; \xfe=1");
        h.insert(header::COOKIE, HeaderValue::from_bytes(&bytes).unwrap());
        assert!(h.get(header::COOKIE).unwrap().to_str().is_err());
        assert_eq!(tokens_from(&h, false), std::slice::from_ref(&good));
        // a session cookie whose own value is not ASCII is not ours
        let mut h = HeaderMap::new();
        let mut bytes = b"huntaze_session=".to_vec();
        bytes.extend_from_slice(&[0xc3; 43]);
        bytes.extend_from_slice(format!("; huntaze_session={good}").as_bytes());
        h.insert(header::COOKIE, HeaderValue::from_bytes(&bytes).unwrap());
        assert_eq!(tokens_from(&h, false), [good]);
    }

    #[test]
    fn every_well_formed_value_is_offered_in_order_once() {
        let (planted, ours) = (new_token(), new_token());
        let h = cookies(&format!(
            "huntaze_session=junk; huntaze_session={planted}; huntaze_session={ours}; huntaze_session={planted}"
        ));
        assert_eq!(tokens_from(&h, false), [planted, ours]);
        let many: Vec<String> = (0..10).map(|_| new_token()).collect();
        let h = cookies(
            &many
                .iter()
                .map(|t| format!("huntaze_session={t}"))
                .collect::<Vec<_>>()
                .join("; "),
        );
        assert_eq!(tokens_from(&h, false), many[..MAX_CANDIDATES]);
    }

    #[test]
    fn over_https_only_the_host_prefixed_name_counts() {
        let (plain, host) = (new_token(), new_token());
        let h = cookies(&format!(
            "huntaze_session={plain}; __Host-huntaze_session={host}"
        ));
        assert_eq!(tokens_from(&h, true), std::slice::from_ref(&host));
        assert_eq!(tokens_from(&h, false), [plain]);
        let set = set_cookie(&host, true, 60);
        let set = set.to_str().unwrap();
        assert!(set.starts_with("__Host-huntaze_session="), "{set}");
        assert!(
            set.contains("; Secure") && set.contains("; Path=/"),
            "{set}"
        );
        assert!(!set.to_ascii_lowercase().contains("domain"), "{set}");
        assert!(
            clear_cookie(true)
                .to_str()
                .unwrap()
                .starts_with("__Host-huntaze_session=;")
        );
    }
}
