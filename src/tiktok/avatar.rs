//! [`AvatarFetcher`]: the connected account's avatar, fetched server-side so
//! the pages' CSP can stay `img-src 'self' data:`.
//!
//! The URL comes from TikTok's answer, which makes this a request to an
//! address someone else chose. So:
//! - only allowlisted hosts (TikTok's image CDNs) and the TikTok API's own
//!   origin are fetched, and every redirect hop is checked the same way;
//! - a name that resolves to a private, loopback, link-local, unique-local,
//!   multicast, unspecified or otherwise non-global address is refused at
//!   resolution, by the client's own resolver, so a name that answers
//!   differently the second time (DNS rebinding) gains nothing. Addresses
//!   written as IP literals never reach a resolver: the host check refuses
//!   them, as an IP matches no host name;
//! - only the API's own origin may sit on a private address: the operator
//!   configured it (the built-in sandbox on loopback in development, a
//!   test's local TikTok), so reaching it is no lever for anyone else. A
//!   switch that lifts the refusal for every host instead would open the
//!   whole allowlist to internal addresses wherever it was left on;
//! - the body is read chunk by chunk and abandoned past the size cap, and
//!   must be a raster image of the type it claims (checked by its magic
//!   bytes). SVG is refused: it is a document that can carry script and
//!   would be served from our origin.
//!
//! No environment proxy is used: a proxy would resolve names itself, past
//! the address check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Origin, Url};

/// Redirect hops followed (each one checked against the allowlist): CDNs
/// move images between their own hosts.
const MAX_REDIRECTS: usize = 3;

/// Which URLs may be fetched.
#[derive(Debug)]
struct HostPolicy {
    /// Lowercase host names; each matches itself and its subdomains.
    suffixes: Vec<String>,
    /// The TikTok API's origin, allowed whatever its host and address.
    trusted: Option<Origin>,
}

impl HostPolicy {
    fn allows(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        if self.trusted.as_ref().is_some_and(|o| *o == url.origin()) {
            return true;
        }
        match url.host() {
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                self.suffixes.iter().any(|s| {
                    d == *s
                        || d.strip_suffix(s.as_str())
                            .is_some_and(|rest| rest.ends_with('.'))
                })
            }
            _ => false,
        }
    }

    /// The trusted origin's host, which the resolver lets through whatever
    /// it resolves to.
    fn trusted_host(&self) -> Option<String> {
        match self.trusted.as_ref()? {
            Origin::Tuple(_, Host::Domain(d), _) => Some(d.to_ascii_lowercase()),
            _ => None,
        }
    }
}

/// Resolves with the system resolver and refuses any name with a
/// non-global address among its answers (all or nothing: a mixed answer is
/// how rebinding attacks hedge).
struct GlobalOnly {
    trusted_host: Option<String>,
}

impl Resolve for GlobalOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let trusted = self.trusted_host.as_deref() == Some(host.as_str());
        Box::pin(resolve_global(host, trusted))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn resolve_global(host: String, trusted: bool) -> Result<Addrs, BoxError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address").into());
    }
    if !trusted && addrs.iter().any(|a| !is_global(a.ip())) {
        return Err(format!("{host} resolves to a non-public address; refused").into());
    }
    Ok(Box::new(addrs.into_iter()))
}

/// Whether `ip` is a global unicast address: not private, loopback,
/// link-local, unique-local, multicast, unspecified, shared (CGNAT),
/// documentation, benchmarking or reserved; IPv6 forms that embed an IPv4
/// address are judged by that address.
pub(crate) fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address
    // they embed.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_global_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return is_global_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // IPv4-compatible (deprecated) ::/96
        || s[..6] == [0, 0, 0, 0, 0, 0]
        || ip.is_unicast_link_local()
        || ip.is_unique_local()
        // site-local (deprecated) fec0::/10
        || (s[0] & 0xffc0) == 0xfec0
        // documentation 2001:db8::/32, Teredo 2001::/32 and other IETF
        // assignments under 2001::/23
        || (s[0] == 0x2001 && (s[1] == 0x0db8 || s[1] < 0x0200))
        // discard-only 100::/64
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]))
}

/// The image types served, by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImageKind {
    Jpeg,
    Png,
    Gif,
    Webp,
    Avif,
}

impl ImageKind {
    fn from_media_type(content_type: &str) -> Option<Self> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match media.as_str() {
            "image/jpeg" | "image/jpg" => Self::Jpeg,
            "image/png" => Self::Png,
            "image/gif" => Self::Gif,
            "image/webp" => Self::Webp,
            "image/avif" => Self::Avif,
            _ => return None,
        })
    }

    fn media_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Avif => "image/avif",
        }
    }

    fn matches(self, body: &[u8]) -> bool {
        match self {
            Self::Jpeg => body.starts_with(&[0xff, 0xd8, 0xff]),
            Self::Png => body.starts_with(b"\x89PNG\r\n\x1a\n"),
            Self::Gif => body.starts_with(b"GIF87a") || body.starts_with(b"GIF89a"),
            Self::Webp => body.len() >= 12 && &body[..4] == b"RIFF" && &body[8..12] == b"WEBP",
            Self::Avif => {
                body.len() >= 12
                    && &body[4..8] == b"ftyp"
                    && matches!(&body[8..12], b"avif" | b"avis")
            }
        }
    }
}

/// An avatar as served: its media type and bytes.
pub struct Avatar {
    pub content_type: &'static str,
    pub body: bytes::Bytes,
}

pub(crate) struct AvatarFetcher {
    http: reqwest::Client,
    policy: Arc<HostPolicy>,
    max_bytes: usize,
}

impl AvatarFetcher {
    /// `hosts`: allowlisted host names; `trusted`: the TikTok API's base URL
    /// (its origin is allowed, even on a private address).
    pub(crate) fn new(
        hosts: Vec<String>,
        trusted: Option<&str>,
        max_bytes: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let policy = Arc::new(HostPolicy {
            suffixes: hosts,
            trusted: trusted
                .and_then(|u| Url::parse(u).ok())
                .map(|u| u.origin())
                .filter(Origin::is_tuple),
        });
        let redirects = Arc::clone(&policy);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .no_proxy()
            .dns_resolver(Arc::new(GlobalOnly {
                trusted_host: policy.trusted_host(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if redirects.allows(attempt.url()) {
                    attempt.follow()
                } else {
                    attempt.error("redirect to a host outside the avatar allowlist")
                }
            }))
            .user_agent(concat!("huntaze/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            policy,
            max_bytes,
        })
    }

    /// Fetches `url` under the rules above; any refusal is an error.
    pub(crate) async fn fetch(&self, url: &str) -> anyhow::Result<Avatar> {
        let url = Url::parse(url).context("avatar URL does not parse")?;
        anyhow::ensure!(
            self.policy.allows(&url),
            "avatar host is not allowed: {}",
            url.host_str().unwrap_or("")
        );
        let mut res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("avatar fetch failed: {e:#}"))?;
        anyhow::ensure!(
            res.status().is_success(),
            "avatar fetch answered {}",
            res.status()
        );
        let kind = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(ImageKind::from_media_type)
            .context("avatar is not a raster image")?;
        anyhow::ensure!(
            res.content_length()
                .is_none_or(|n| n <= self.max_bytes as u64),
            "avatar larger than {} bytes",
            self.max_bytes
        );
        let mut body = Vec::new();
        // Chunk by chunk: a body without a length (chunked, or a length
        // that lies) is abandoned as soon as it passes the cap, and dropping
        // the response closes the connection.
        while let Some(chunk) = res.chunk().await.context("avatar body read failed")? {
            anyhow::ensure!(
                body.len() + chunk.len() <= self.max_bytes,
                "avatar larger than {} bytes",
                self.max_bytes
            );
            body.extend_from_slice(&chunk);
        }
        anyhow::ensure!(
            kind.matches(&body),
            "avatar body is not the {} it claims to be",
            kind.media_type()
        );
        Ok(Avatar {
            content_type: kind.media_type(),
            body: body.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(trusted: Option<&str>) -> HostPolicy {
        HostPolicy {
            suffixes: vec!["tiktokcdn.com".into(), "ibyteimg.com".into()],
            trusted: trusted.map(|t| Url::parse(t).unwrap().origin()),
        }
    }

    #[test]
    fn hosts_match_themselves_and_their_subdomains_only() {
        let p = policy(None);
        let ok = |u: &str| p.allows(&Url::parse(u).unwrap());
        assert!(ok("https://p16-sign-va.tiktokcdn.com/a.jpeg"));
        assert!(ok("https://tiktokcdn.com/a.jpeg"));
        assert!(ok("https://P16.TIKTOKCDN.COM./a.jpeg"));
        assert!(ok("https://x.ibyteimg.com/a.webp"));
        assert!(!ok("https://eviltiktokcdn.com/a.jpeg"));
        assert!(!ok("https://tiktokcdn.com.evil.example/a.jpeg"));
        assert!(!ok("https://127.0.0.1/a.jpeg"));
        assert!(!ok("https://[::1]/a.jpeg"));
        assert!(!ok("ftp://p16.tiktokcdn.com/a.jpeg"));
        assert!(!ok("file:///etc/passwd"));
    }

    #[test]
    fn the_api_origin_is_allowed_exactly() {
        let p = policy(Some("http://127.0.0.1:3100/tiktok-sandbox"));
        let ok = |u: &str| p.allows(&Url::parse(u).unwrap());
        assert!(ok(
            "http://127.0.0.1:3100/tiktok-sandbox/sandbox/avatar.png"
        ));
        assert!(!ok("http://127.0.0.1:3101/x.png"), "another port");
        assert!(!ok("https://127.0.0.1:3100/x.png"), "another scheme");
        assert!(!ok("http://127.0.0.2:3100/x.png"), "another host");
        assert_eq!(
            p.trusted_host(),
            None,
            "an IP literal needs no resolver exemption"
        );
        let p = policy(Some("http://localhost:3100"));
        assert_eq!(p.trusted_host().as_deref(), Some("localhost"));
    }

    #[test]
    fn only_global_addresses_pass() {
        for refused in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "fec0::1",
            "2001:db8::1",
            "2001::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
            "::127.0.0.1",
            "100::1",
        ] {
            assert!(!is_global(refused.parse().unwrap()), "{refused}");
        }
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "23.1.2.3",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_global(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn the_body_must_be_the_image_its_type_claims() {
        assert_eq!(
            ImageKind::from_media_type("image/PNG; q=1"),
            Some(ImageKind::Png)
        );
        assert_eq!(ImageKind::from_media_type("image/svg+xml"), None);
        assert_eq!(ImageKind::from_media_type("text/html"), None);
        assert!(ImageKind::Png.matches(b"\x89PNG\r\n\x1a\n...."));
        assert!(!ImageKind::Png.matches(b"<html>"));
        assert!(ImageKind::Jpeg.matches(&[0xff, 0xd8, 0xff, 0xe0]));
        assert!(ImageKind::Webp.matches(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!ImageKind::Webp.matches(b"RIFF\0\0\0\0WAVE"));
    }
}
