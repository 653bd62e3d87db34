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

use crate::precompressed::{Encoded, Precompressed};

/// The CSS inlined in every page's `<head>` (above-the-fold styles).
pub(crate) const CRITICAL_CSS: &str = include_str!("../assets/critical.css");

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `/favicon.ico` keeps its name across releases, so it cannot be
/// immutable: a day, long enough that browsers do not ask on every page.
const FAVICON_CACHE: &str = "public, max-age=86400";

/// An embedded asset: its bytes and the compressed forms `build.rs` made.
struct File {
    /// Under `assets/`; its last segment is the name templates ask for.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    br: &'static [u8],
    zstd: &'static [u8],
    gzip: &'static [u8],
}

impl File {
    fn name(&self) -> &'static str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }
}

/// `asset!("vendor/x.js", "text/javascript")`: the file under `assets/` and
/// its compressed forms from `$OUT_DIR/assets/`.
macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        File {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $path)),
            br: include_bytes!(concat!(env!("OUT_DIR"), "/assets/", $path, ".br")),
            zstd: include_bytes!(concat!(env!("OUT_DIR"), "/assets/", $path, ".zst")),
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/assets/", $path, ".gz")),
        }
    };
}

const FILES: &[File] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("creators.svg", "image/svg+xml"),
    asset!("platforms.svg", "image/svg+xml"),
    asset!("dashboard.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
];

/// The icon browsers fetch from `/favicon.ico` whatever a page links (on
/// JSON and error responses too, and some only read ICO). Drawn from
/// `favicon.svg` by `scripts/favicon-ico.py`; served under its own name.
const FAVICON_ICO: File = asset!("favicon.ico", "image/x-icon");

/// The embedded assets by hashed file name.
pub struct Assets {
    by_hashed_name: HashMap<String, Precompressed>,
    url_by_name: HashMap<&'static str, String>,
    favicon_ico: Precompressed,
    critical_css_hash: String,
}

/// `f` with its build-time compressed forms. An empty form: build.rs's
/// encoder failed; not offered.
fn precompressed(f: &File, cache_control: &'static str) -> Precompressed {
    let some = |b: &'static [u8]| (!b.is_empty()).then(|| Bytes::from_static(b));
    let encoded = Encoded {
        brotli: some(f.br),
        zstd: some(f.zstd),
        gzip: some(f.gzip),
    };
    Precompressed::from_encoded(
        Bytes::from_static(f.body),
        encoded,
        f.content_type,
        cache_control,
    )
}

impl Assets {
    pub fn load() -> Self {
        let mut by_hashed_name = HashMap::new();
        let mut url_by_name = HashMap::new();
        for f in FILES {
            let body = precompressed(f, IMMUTABLE);
            let name = f.name();
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            let hashed = format!("{stem}.{}.{ext}", body.hash());
            url_by_name.insert(name, format!("/assets/{hashed}"));
            by_hashed_name.insert(hashed, body);
        }
        let digest = Sha256::digest(CRITICAL_CSS.as_bytes());
        Self {
            by_hashed_name,
            url_by_name,
            favicon_ico: precompressed(&FAVICON_ICO, FAVICON_CACHE),
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

    /// The body of `/favicon.ico`.
    pub fn favicon_ico(&self) -> &Precompressed {
        &self.favicon_ico
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

    /// build.rs's output is what the server serves for those encodings:
    /// each form must decode to the very bytes of the file.
    #[test]
    fn the_build_time_compressed_forms_decode_to_the_files() {
        use std::io::Read;
        for f in FILES.iter().chain([&FAVICON_ICO]) {
            let mut br = Vec::new();
            brotli::Decompressor::new(f.br, 4096)
                .read_to_end(&mut br)
                .unwrap();
            assert_eq!(br, f.body, "{} .br", f.path);
            assert_eq!(zstd::decode_all(f.zstd).unwrap(), f.body, "{} .zst", f.path);
            let mut gz = Vec::new();
            flate2::read::GzDecoder::new(f.gzip)
                .read_to_end(&mut gz)
                .unwrap();
            assert_eq!(gz, f.body, "{} .gz", f.path);
        }
        let assets = Assets::load();
        let url = assets.url("uPlot.iife.min.js");
        let served = assets
            .get(url.strip_prefix("/assets/").unwrap())
            .unwrap()
            .respond(
                &[(
                    http::header::ACCEPT_ENCODING,
                    http::HeaderValue::from_static("br"),
                )]
                .into_iter()
                .collect(),
                &crate::precompressed::PipelineHeaders::default(),
            );
        assert_eq!(served.headers()["content-encoding"], "br");
    }
}
