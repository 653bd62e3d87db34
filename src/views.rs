//! Server-rendered HTML views (askama templates, checked at compile time).
//! Views hold display data only; they never query anything.

use askama::Template;

use crate::assets::{Assets, CRITICAL_CSS};

/// What every page's layout needs.
#[derive(Clone, Debug)]
pub(crate) struct Chrome {
    pub critical_css: &'static str,
    pub css: String,
    pub favicon: String,
    pub signed_in: bool,
}

impl Chrome {
    pub(crate) fn new(assets: &Assets, signed_in: bool) -> Self {
        Self {
            critical_css: CRITICAL_CSS,
            css: assets.url("app.css"),
            favicon: assets.url("favicon.svg"),
            signed_in,
        }
    }
}

#[derive(Template)]
#[template(path = "landing.html")]
pub(crate) struct LandingView {
    pub chrome: Chrome,
    /// Preformatted figures ("1,204", or "—" when not known yet).
    pub creators: String,
    pub connections: String,
    pub platform_count: usize,
    pub creators_img: String,
    pub platforms_img: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorView {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
    pub request_id: String,
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct LoginView {
    pub chrome: Chrome,
    pub next: String,
    pub email: String,
    pub notice: Option<String>,
    pub email_error: Option<String>,
    pub password_error: Option<String>,
}

#[derive(Template)]
#[template(path = "register.html")]
pub(crate) struct RegisterView {
    pub chrome: Chrome,
    pub email: String,
    pub display_name: String,
    pub notice: Option<String>,
    pub email_error: Option<String>,
    pub password_error: Option<String>,
    pub display_name_error: Option<String>,
}

#[derive(Template)]
#[template(path = "platforms.html")]
pub(crate) struct PlatformsView {
    pub chrome: Chrome,
    pub user_label: String,
    pub tiktok_connected: bool,
    pub csrf_token: String,
}

#[derive(Template)]
#[template(path = "connect_tiktok.html")]
pub(crate) struct ConnectTikTokView {
    pub chrome: Chrome,
    pub sandbox: bool,
    pub available: bool,
    pub unavailable_notice: bool,
    pub connected: bool,
    pub reconnect_needed: bool,
    pub display_name: String,
    pub scopes: String,
    pub csrf_token: String,
    pub outcome_ok: Option<String>,
    pub outcome_error: Option<String>,
}
