//! Static assets, embedded in the binary and served from memory under
//! content-hashed names (`/assets/app.3fa1c2d4e5f6.css`) with immutable
//! caching, precompressed like the landing page.
//!
//! Also owns the inline critical CSS and its CSP hash, so that the strict
//! `Content-Security-Policy` can allow exactly that one inline block.

use std::collections::HashMap;

use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::precompressed::Precompressed;

/// The CSS inlined in every page's `<head>` (above-the-fold styles).
pub const CRITICAL_CSS: &str = include_str!("../assets/critical.css");

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// (logical name, content type, bytes)
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/favicon.svg"),
    ),
    (
        "creators.svg",
        "image/svg+xml",
        include_bytes!("../assets/creators.svg"),
    ),
    (
        "platforms.svg",
        "image/svg+xml",
        include_bytes!("../assets/platforms.svg"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/dashboard.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.min.css"),
    ),
];

/// The embedded assets by hashed file name.
pub struct Assets {
    by_hashed_name: HashMap<String, Precompressed>,
    url_by_name: HashMap<&'static str, String>,
    critical_css_hash: String,
}

impl Assets {
    pub fn load() -> Self {
        let mut by_hashed_name = HashMap::new();
        let mut url_by_name = HashMap::new();
        for (name, content_type, bytes) in FILES {
            let body = Precompressed::new(Bytes::from_static(bytes), content_type, IMMUTABLE);
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            let hashed = format!("{stem}.{}.{ext}", body.hash());
            url_by_name.insert(*name, format!("/assets/{hashed}"));
            by_hashed_name.insert(hashed, body);
        }
        let digest = Sha256::digest(CRITICAL_CSS.as_bytes());
        Self {
            by_hashed_name,
            url_by_name,
            critical_css_hash: format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ),
        }
    }

    /// The served URL of a logical asset name (`app.css`). Every name a
    /// template asks for is in `FILES` (a unit test checks the templates'
    /// names); an unknown one yields a URL that answers 404.
    pub fn url(&self, name: &str) -> String {
        self.url_by_name
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("/assets/missing/{name}"))
    }

    pub fn get(&self, hashed_name: &str) -> Option<&Precompressed> {
        self.by_hashed_name.get(hashed_name)
    }

    /// CSP source expression for the inline critical CSS.
    pub fn critical_css_csp(&self) -> &str {
        &self.critical_css_hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_code_names_is_embedded() {
        let assets = Assets::load();
        for name in [
            "app.css",
            "favicon.svg",
            "creators.svg",
            "platforms.svg",
            "dashboard.js",
            "uPlot.iife.min.js",
            "uPlot.min.css",
        ] {
            let url = assets.url(name);
            let hashed = url.strip_prefix("/assets/").unwrap();
            assert!(assets.get(hashed).is_some(), "{name} → {url}");
        }
    }
}
