//! [`ConnectError`]: why a connect attempt ended without a connection.

use super::client::TikTokError;

/// Why a connect attempt ended without a connection. Each has a code for
/// `?error=CODE` and a message a creator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    AccessDenied,
    InvalidCallback,
    InvalidState,
    ExchangeFailed,
    TikTokUnavailable,
    NotConfigured,
    ServiceUnavailable,
    RateLimited,
    /// The session that started or finished the flow no longer exists (it
    /// was signed out, or its account was taken over by `create-admin
    /// --promote`) though an instance's cache still knew it.
    SessionEnded,
    Internal,
}

/// Each error with its code (for `?error=CODE`, and the audit log) and the
/// message a creator can act on: one row per error, so the three cannot
/// drift apart.
const TABLE: [(ConnectError, &str, &str); 10] = [
    (
        ConnectError::AccessDenied,
        "ACCESS_DENIED",
        "You cancelled the connection on TikTok. Nothing was connected.",
    ),
    (
        ConnectError::InvalidCallback,
        "INVALID_CALLBACK",
        "TikTok sent us an incomplete answer. Please try connecting again.",
    ),
    (
        ConnectError::InvalidState,
        "INVALID_STATE",
        "This connection link has expired or was already used. Please start again from this page.",
    ),
    (
        ConnectError::ExchangeFailed,
        "EXCHANGE_FAILED",
        "TikTok did not accept the connection. Please try again.",
    ),
    (
        ConnectError::TikTokUnavailable,
        "TIKTOK_UNAVAILABLE",
        "TikTok is temporarily unavailable. Please try again in a few minutes.",
    ),
    (
        ConnectError::NotConfigured,
        "NOT_CONFIGURED",
        "Connecting TikTok is not available on this server right now.",
    ),
    (
        ConnectError::ServiceUnavailable,
        "SERVICE_UNAVAILABLE",
        "We could not save your connection just now. Please try again shortly.",
    ),
    (
        ConnectError::RateLimited,
        "RATE_LIMITED",
        "You started connecting TikTok many times in a short while. Please wait a minute, then try again.",
    ),
    (
        ConnectError::SessionEnded,
        "SESSION_ENDED",
        "Your session has ended. Please sign in and connect again.",
    ),
    (
        ConnectError::Internal,
        "INTERNAL_ERROR",
        "Something went wrong on our side. Please try again.",
    ),
];

impl ConnectError {
    fn entry(self) -> &'static (ConnectError, &'static str, &'static str) {
        // Every variant has its row (a test checks it), so the fallback is
        // never taken.
        TABLE
            .iter()
            .find(|(e, _, _)| *e == self)
            .unwrap_or(&TABLE[TABLE.len() - 1])
    }

    pub fn code(self) -> &'static str {
        self.entry().1
    }

    pub fn from_code(code: &str) -> Option<Self> {
        TABLE
            .iter()
            .find(|(_, c, _)| *c == code)
            .map(|(e, _, _)| *e)
    }

    pub fn message(self) -> &'static str {
        self.entry().2
    }
}

impl From<sqlx::Error> for ConnectError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "storage failed during the TikTok flow");
        match crate::store::classify(&e) {
            crate::store::Fault::Permanent => ConnectError::Internal,
            _ => ConnectError::ServiceUnavailable,
        }
    }
}

pub(super) fn from_tiktok(e: &TikTokError) -> ConnectError {
    match e {
        TikTokError::Unavailable(_) | TikTokError::CircuitOpen => ConnectError::TikTokUnavailable,
        TikTokError::Rejected { .. } | TikTokError::TokenInvalid => ConnectError::ExchangeFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for e in [
            ConnectError::AccessDenied,
            ConnectError::InvalidState,
            ConnectError::TikTokUnavailable,
            ConnectError::RateLimited,
        ] {
            assert_eq!(ConnectError::from_code(e.code()), Some(e));
        }
        assert_eq!(ConnectError::from_code("<script>"), None);
    }

    #[test]
    fn every_error_has_its_own_row() {
        for (i, (e, code, _)) in TABLE.iter().enumerate() {
            assert_eq!(e.entry().1, *code);
            assert!(
                TABLE[..i]
                    .iter()
                    .all(|(other, c, _)| other != e && c != code)
            );
        }
    }
}
