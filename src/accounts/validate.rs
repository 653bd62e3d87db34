//! Parse, don't validate: [`Email`], [`Password`] and [`DisplayName`] can
//! only hold valid values, so deeper code never sees an invalid one.

use unicode_normalization::UnicodeNormalization;

use crate::error::FieldError;

/// Longest email accepted (characters, after trimming), RFC 5321's path limit.
pub const EMAIL_MAX: usize = 254;
/// Longest local part (before the `@`) accepted.
pub(crate) const EMAIL_LOCAL_MAX: usize = 64;

/// A normalized (trimmed, lowercased) email address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let err = |m: &str| FieldError::new("email", m);
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err(err("is required"));
        }
        if s.chars().count() > EMAIL_MAX {
            return Err(err(&format!("must be at most {EMAIL_MAX} characters")));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(err("must not contain spaces or control characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(err("must look like name@example.com"));
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if local.is_empty()
            || local.chars().count() > EMAIL_LOCAL_MAX
            || local.contains('@')
            || !domain_ok
        {
            return Err(err("must look like name@example.com"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the rules: 10–128 characters after Unicode NFC
/// normalization (so the same password typed on two keyboards matches), not
/// a single repeated character, not the email.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 128;
/// Longest password presented at login: generous (an old password may
/// predate today's rules) but bounded, so nobody makes us hash megabytes.
pub const LOGIN_PASSWORD_MAX: usize = PASSWORD_MAX * 4;

impl Password {
    /// Rules for a new password.
    pub fn parse_new(raw: &str, email: Option<&Email>) -> Result<Self, FieldError> {
        let err = |m: &str| FieldError::new("password", m);
        let p = Self::normalize(raw);
        let n = p.chars().count();
        if n < PASSWORD_MIN {
            return Err(err(&format!("must be at least {PASSWORD_MIN} characters")));
        }
        if n > PASSWORD_MAX {
            return Err(err(&format!("must be at most {PASSWORD_MAX} characters")));
        }
        if p.chars().any(|c| c.is_control()) {
            return Err(err("must not contain control characters"));
        }
        let mut chars = p.chars();
        let first = chars.next();
        if chars.all(|c| Some(c) == first) {
            return Err(err("must not be one repeated character"));
        }
        if email.is_some_and(|e| e.as_str() == p.to_lowercase()) {
            return Err(err("must not be your email address"));
        }
        Ok(Self(p))
    }

    /// A password presented at login: only bounded, never judged (an old
    /// password may predate today's rules).
    pub fn parse_login(raw: &str) -> Result<Self, FieldError> {
        if raw.is_empty() {
            return Err(FieldError::new("password", "is required"));
        }
        if raw.chars().count() > LOGIN_PASSWORD_MAX {
            return Err(FieldError::new("password", "is too long"));
        }
        Ok(Self(Self::normalize(raw)))
    }

    fn normalize(raw: &str) -> String {
        raw.nfc().collect()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Longest display name (characters, after trimming).
pub const DISPLAY_NAME_MAX: usize = 50;

/// 1–50 characters, trimmed, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let err = |m: &str| FieldError::new("displayName", m);
        let s: String = raw.trim().nfc().collect();
        if s.is_empty() {
            return Err(err("must not be empty"));
        }
        if s.chars().count() > DISPLAY_NAME_MAX {
            return Err(err(&format!(
                "must be at most {DISPLAY_NAME_MAX} characters"
            )));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(err("must not contain control characters"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `next` redirect target: only a local path (`/…`, not `//host` or
/// `/\host`, no scheme, no control characters). Anything else becomes `/platforms`.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    const DEFAULT: &str = "/platforms";
    let Some(n) = next else {
        return DEFAULT.into();
    };
    let ok = n.starts_with('/')
        && !n.starts_with("//")
        && !n.starts_with("/\\")
        && n.len() <= 512
        && !n.chars().any(|c| c.is_control() || c == '\\')
        && !n.contains("://");
    if ok { n.to_owned() } else { DEFAULT.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            Email::parse("  Ana@Example.COM ").unwrap().as_str(),
            "ana@example.com"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "ana@exa..mple.com",
            "ana@-x.com\u{0}",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(Email::parse("josé@exämple.com").is_ok());
    }

    #[test]
    fn passwords_follow_the_rules_and_count_characters_not_bytes() {
        assert!(Password::parse_new("short", None).is_err());
        assert!(Password::parse_new("aaaaaaaaaaaa", None).is_err());
        assert!(Password::parse_new(&"x".repeat(129), None).is_err());
        assert!(Password::parse_new("correct horse", None).is_ok());
        // 10 characters, 30 bytes
        assert!(Password::parse_new("日本語のパスワード十", None).is_ok());
        let email = Email::parse("ana@example.com").unwrap();
        assert!(Password::parse_new("ANA@example.com", Some(&email)).is_err());
        assert!(Password::parse_new("tab\there123", None).is_err());
    }

    #[test]
    fn nfc_and_nfd_spellings_are_the_same_password() {
        let nfc = Password::parse_new("caf\u{e9} au lait!", None).unwrap();
        let nfd = Password::parse_login("cafe\u{301} au lait!").unwrap();
        assert_eq!(nfc.expose(), nfd.expose());
    }

    #[test]
    fn next_accepts_only_local_paths() {
        assert_eq!(
            safe_next(Some("/platforms/connect/tiktok")),
            "/platforms/connect/tiktok"
        );
        for bad in [
            "https://evil.com",
            "//evil.com",
            "/\\evil.com",
            "evil",
            "/x\r\nSet-Cookie: a",
            "javascript:alert(1)",
            "/redirect?to=http://evil.com",
        ] {
            assert_eq!(safe_next(Some(bad)), "/platforms", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/platforms");
    }
}
