//! [`Precompressed`]: a body compressed once, ahead of time, in every
//! encoding we serve (br, zstd, gzip, identity), with a strong ETag per
//! variant, and the request-time negotiation that picks one.
//!
//! Used by the landing page and static assets so that serving them costs a
//! header parse and a reference-count increment, never compression work.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::compress;

/// Headers a served response ends up with, middleware included.
const RESPONSE_HEADERS: usize = 16;

/// The headers the response pipeline adds to every response (security
/// headers, the request id's slot), handed in by the edge once so that a
/// precompressed 200 carries them ready-made and the pipeline finds nothing
/// left to add. Kept in the order given, which is their order on the wire.
#[derive(Clone, Debug, Default)]
pub struct PipelineHeaders(HeaderMap);

impl PipelineHeaders {
    pub fn new(headers: HeaderMap) -> Self {
        Self(headers)
    }

    /// Adds each header `h` has not set itself.
    fn add_to(&self, h: &mut HeaderMap) {
        h.reserve(self.0.len());
        for (name, value) in &self.0 {
            h.entry(name).or_insert_with(|| value.clone());
        }
    }
}

/// A body's compressed forms (`None`: that encoder failed).
pub struct Encoded {
    pub brotli: Option<Bytes>,
    pub zstd: Option<Bytes>,
    pub gzip: Option<Bytes>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Brotli,
    Zstd,
    Gzip,
    Identity,
}

impl Encoding {
    fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
            Encoding::Identity => "identity",
        }
    }
}

#[derive(Clone, Debug)]
struct Variant {
    encoding: Encoding,
    body: Bytes,
    etag: HeaderValue,
    /// Every header of a 200 for this variant, the pipeline's included,
    /// built on first use: cloning a finished map costs a fraction of a
    /// dozen inserts, on the busiest response there is.
    headers: OnceLock<HeaderMap>,
}

/// One representation in every encoding.
#[derive(Clone, Debug)]
pub struct Precompressed {
    content_type: HeaderValue,
    cache_control: HeaderValue,
    /// br, zstd, gzip, identity, in preference order.
    variants: Vec<Variant>,
    hash: String,
}

impl Precompressed {
    /// Compresses `body` in every encoding. CPU-heavy (brotli at its best
    /// quality): call it off the async workers, once per render.
    pub fn new(body: Bytes, content_type: &'static str, cache_control: &'static str) -> Self {
        let encoded = Encoded {
            brotli: compress::brotli(&body).map(Bytes::from),
            zstd: compress::zstd(&body).map(Bytes::from),
            gzip: compress::gzip(&body).map(Bytes::from),
        };
        Self::from_encoded(body, encoded, content_type, cache_control)
    }

    /// A body already compressed (the embedded assets, by `build.rs`).
    pub fn from_encoded(
        body: Bytes,
        encoded: Encoded,
        content_type: &'static str,
        cache_control: &'static str,
    ) -> Self {
        let hash = hex::encode(&Sha256::digest(&body)[..12]);
        let mut variants = Vec::with_capacity(4);
        let mut push = |encoding: Encoding, bytes: Option<Bytes>| {
            // A variant that would not be smaller is not worth offering.
            if let Some(bytes) = bytes.filter(|b| b.len() < body.len()) {
                variants.push(Variant {
                    encoding,
                    body: bytes,
                    etag: etag(&hash, encoding),
                    headers: OnceLock::new(),
                });
            }
        };
        push(Encoding::Brotli, encoded.brotli);
        push(Encoding::Zstd, encoded.zstd);
        push(Encoding::Gzip, encoded.gzip);
        variants.push(Variant {
            encoding: Encoding::Identity,
            body: body.clone(),
            etag: etag(&hash, Encoding::Identity),
            headers: OnceLock::new(),
        });
        Self {
            content_type: HeaderValue::from_static(content_type),
            cache_control: HeaderValue::from_static(cache_control),
            variants,
            hash,
        }
    }

    /// Hex digest of the identity body (content-hashed asset names use it).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn identity(&self) -> &Bytes {
        &self.variant(Encoding::Identity).body
    }

    fn variant(&self, encoding: Encoding) -> &Variant {
        self.variants
            .iter()
            .find(|v| v.encoding == encoding)
            .unwrap_or_else(|| &self.variants[self.variants.len() - 1])
    }
    /// The response for these request headers: 304 when `If-None-Match`
    /// names any variant, else the negotiated variant. A 200 carries
    /// `pipeline`'s headers already (the pipeline then leaves them); one
    /// `Precompressed` serves one app, whose pipeline headers never change.
    pub fn respond(&self, request: &HeaderMap, pipeline: &PipelineHeaders) -> Response {
        let chosen = self.negotiate(request);
        if self.matches_if_none_match(request) {
            let mut r = Response::new(Body::empty());
            let mut headers = HeaderMap::with_capacity(RESPONSE_HEADERS);
            headers.insert(header::ETAG, chosen.etag.clone());
            headers.insert(header::CACHE_CONTROL, self.cache_control.clone());
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            *r.headers_mut() = headers;
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return r;
        }
        let headers = chosen.headers.get_or_init(|| {
            let mut h = HeaderMap::with_capacity(RESPONSE_HEADERS);
            h.insert(header::CONTENT_TYPE, self.content_type.clone());
            if chosen.encoding != Encoding::Identity {
                h.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(chosen.encoding.token()),
                );
            }
            // Known now, so axum need not insert it per request.
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(chosen.body.len()));
            h.insert(header::ETAG, chosen.etag.clone());
            h.insert(header::CACHE_CONTROL, self.cache_control.clone());
            h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            pipeline.add_to(&mut h);
            h
        });
        let mut r = Response::new(Body::from(chosen.body.clone()));
        *r.headers_mut() = headers.clone();
        r
    }

    fn matches_if_none_match(&self, request: &HeaderMap) -> bool {
        let Some(inm) = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        inm.split(',').map(str::trim).any(|tag| {
            tag == "*"
                || self
                    .variants
                    .iter()
                    .any(|v| v.etag.as_bytes() == tag.as_bytes())
        })
    }

    /// The best encoding the request accepts (ties go to our preference
    /// order), read straight off the header: no list is built, so the
    /// landing page's negotiation allocates nothing.
    fn negotiate(&self, request: &HeaderMap) -> &Variant {
        // An encoding's q: the first entry naming it, else the first `*`,
        // else 0 (not acceptable).
        let mut named: [Option<f32>; 3] = [None; 3];
        let mut star: Option<f32> = None;
        for (token, q) in accept_encoding(request) {
            if token == b"*" {
                star.get_or_insert(q);
            } else if let Some(i) = COMPRESSED
                .iter()
                .position(|e| token.eq_ignore_ascii_case(e.token().as_bytes()))
            {
                named[i].get_or_insert(q);
            }
        }
        let mut best: Option<(&Variant, f32)> = None;
        for v in &self.variants {
            let Some(i) = COMPRESSED.iter().position(|e| *e == v.encoding) else {
                continue;
            };
            let weight = named[i].or(star).unwrap_or(0.0);
            if weight > 0.0 && best.is_none_or(|(_, w)| weight > w) {
                best = Some((v, weight));
            }
        }
        best.map(|(v, _)| v)
            .unwrap_or_else(|| self.variant(Encoding::Identity))
    }
}

/// The encodings a variant can be compressed in, in preference order.
const COMPRESSED: [Encoding; 3] = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];

fn etag(hash: &str, encoding: Encoding) -> HeaderValue {
    let suffix = match encoding {
        Encoding::Identity => String::new(),
        other => format!("-{}", other.token()),
    };
    HeaderValue::from_str(&format!("\"{hash}{suffix}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `Accept-Encoding` as (token, q) pairs (compare tokens ignoring case);
/// malformed q-values count as 1 (lenient like common servers), absurd ones
/// are clamped; at most 32 entries per header line are read.
///
/// Split as bytes: `str::split` and `trim` would cost more than the rest
/// of the landing page's lookup for a one-token header. A token with bytes
/// outside ASCII matches no encoding; the rest of its line still counts.
fn accept_encoding(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], f32)> {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b',').take(32))
        .filter_map(|part| {
            let mut pieces = part.split(|b| *b == b';');
            let token = pieces.next().unwrap_or_default().trim_ascii();
            if token.is_empty() {
                return None;
            }
            let q = pieces
                .find_map(|p| p.trim_ascii().strip_prefix(b"q="))
                .map_or(1.0, |q| {
                    std::str::from_utf8(q)
                        .ok()
                        .and_then(|q| q.parse::<f32>().ok())
                        .unwrap_or(1.0)
                })
                .clamp(0.0, 1.0);
            Some((token, q))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Precompressed {
        Precompressed::new(
            Bytes::from("hello world ".repeat(200)),
            "text/html; charset=utf-8",
            "public, max-age=60",
        )
    }

    /// What the edge hands in: a security policy and the request id's slot.
    fn security() -> PipelineHeaders {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        h.insert("x-request-id", HeaderValue::from_static("-"));
        PipelineHeaders::new(h)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn negotiation_prefers_brotli_then_zstd_then_gzip() {
        let p = page();
        let enc = |ae| {
            p.respond(&headers(&[("accept-encoding", ae)]), &security())
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(enc("gzip, deflate, br, zstd").as_deref(), Some("br"));
        assert_eq!(enc("gzip, zstd").as_deref(), Some("zstd"));
        assert_eq!(enc("gzip").as_deref(), Some("gzip"));
        assert_eq!(enc("br;q=0.5, gzip;q=0.9").as_deref(), Some("gzip"));
        assert_eq!(enc("br;q=0, gzip;q=0"), None);
        assert_eq!(enc("identity"), None);
        assert_eq!(enc("*").as_deref(), Some("br"));
        // A named encoding's own q wins over `*`, whichever comes first.
        assert_eq!(enc("*;q=0.5, gzip").as_deref(), Some("gzip"));
        assert_eq!(enc("br;q=0, *").as_deref(), Some("zstd"));
        assert_eq!(enc("BR, GZip").as_deref(), Some("br"));
        assert_eq!(enc("gzip;q=abc").as_deref(), Some("gzip"));
        assert_eq!(enc(" , ;q=1, gzip ;q=0.2").as_deref(), Some("gzip"));
        assert_eq!(
            enc("\tgzip\t; q=0.3 ,zstd; x=1;q=0.2").as_deref(),
            Some("gzip")
        );
        // Bytes outside ASCII spoil their own entry only.
        let odd = HeaderValue::from_bytes(b"br\xff, gzip").unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, odd);
        let res = p.respond(&h, &security());
        assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
        // Several header lines read as one list.
        let mut two = headers(&[("accept-encoding", "gzip;q=0.4")]);
        two.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("zstd;q=0.6"),
        );
        let res = p.respond(&two, &security());
        assert_eq!(res.headers()[header::CONTENT_ENCODING], "zstd");
    }

    #[test]
    fn if_none_match_with_any_variant_tag_gives_304() {
        let p = page();
        let full = p.respond(&headers(&[("accept-encoding", "gzip")]), &security());
        assert!(full.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let gzip_len = p.variant(Encoding::Gzip).body.len().to_string();
        assert_eq!(full.headers()[header::CONTENT_LENGTH], gzip_len.as_str());
        let tag = full.headers()[header::ETAG].clone();
        let mut h = headers(&[("accept-encoding", "br")]);
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(
            p.respond(&h, &security()).status(),
            StatusCode::NOT_MODIFIED
        );
        let h = headers(&[("if-none-match", "\"other\"")]);
        assert_eq!(p.respond(&h, &security()).status(), StatusCode::OK);
    }
}
