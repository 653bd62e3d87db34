//! The serving certificate of the HTTPS listener: read and checked from a
//! PEM pair, handed to each new handshake, and replaced in place on reload.
//!
//! A reload never makes things worse: the new pair must parse, its key must
//! match its certificate and it must be valid now, or the old pair stays and
//! the reason is returned for the log. Handshakes read the current pair
//! through an [`ArcSwap`], so a reload touches no open connection and needs
//! no lock on the handshake path.
//!
//! The crypto provider is aws-lc-rs, named explicitly rather than taken from
//! the process default, so nothing depends on which provider another crate
//! installed first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the pair is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    /// PEM certificates, the server's own first, then its chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a pair was not taken. The messages name files, never their content.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} holds no PEM private key", .0.display())]
    NoKey(PathBuf),
    #[error("{} holds a passphrase-protected private key; the server needs it unencrypted (openssl pkey -in KEY -out KEY.plain)", .0.display())]
    EncryptedKey(PathBuf),
    #[error("the private key cannot be used: {0}")]
    UnusableKey(rustls::Error),
    #[error(
        "the private key does not belong to the first certificate of the chain (the server's own certificate must come first)"
    )]
    Mismatch,
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate expired at {0}")]
    Expired(String),
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
}

/// Why a file of trusted CA certificates (for PostgreSQL or Redis) cannot
/// be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaError {
    #[error("cannot be read: {0}")]
    Read(std::io::Error),
    #[error("holds no PEM certificate")]
    NoCertificate,
}

/// Reads a PEM bundle of CA certificates, refused when unreadable or when
/// it holds no certificate: a file that cannot serve would otherwise fail
/// every handshake later, one at a time.
pub(crate) fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, CaError> {
    let pem = std::fs::read(path).map_err(CaError::Read)?;
    check_ca_pem(&pem)?;
    Ok(pem)
}

/// Whether PEM text holds at least one certificate, all of them whole.
pub(crate) fn check_ca_pem(pem: &[u8]) -> Result<(), CaError> {
    let certificates: Result<Vec<CertificateDer<'_>>, _> =
        CertificateDer::pem_slice_iter(pem).collect();
    if certificates.is_ok_and(|c| !c.is_empty()) {
        Ok(())
    } else {
        Err(CaError::NoCertificate)
    }
}

/// A pair that passed every check, with what monitoring reports of it.
#[derive(Debug)]
pub struct ServingCert {
    pub key: Arc<CertifiedKey>,
    /// Validity period, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The certificate's subject, for logs.
    pub subject: String,
}

impl ServingCert {
    /// Whole days from `now` (Unix seconds) to expiry; negative once
    /// expired.
    pub fn days_to_expiry(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Fewer whole days than this before the serving certificate expires is a
/// warning (health `config` degraded, `check-config`, the Prometheus alert
/// in `deploy/prometheus/alerts.yml`): two weeks leave room for a renewal
/// that fails once and is retried.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 14;

/// The crypto provider of every TLS endpoint this server builds.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes [`provider`] the process default, for libraries that build their
/// rustls configuration from it (the redis crate): with a second provider
/// ever enabled in the tree, rustls would otherwise pick none. Idempotent.
pub(crate) fn install_default_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::aws_lc_rs::default_provider());
}

/// Reads and checks the pair at `paths` as of `now` (Unix seconds).
pub(crate) fn load_pair(paths: &CertPaths, now: i64) -> Result<ServingCert, CertError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("certificate", &paths.cert)?;
    let key_pem = read("private key", &paths.key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| CertError::NoCertificate(paths.cert.clone()))?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate(paths.cert.clone()));
    };
    let (not_before, not_after, subject) = validity(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        if is_encrypted_key(&key_pem) {
            CertError::EncryptedKey(paths.key.clone())
        } else {
            CertError::NoKey(paths.key.clone())
        }
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(CertError::UnusableKey)?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(CertError::Mismatch),
    }
    if now >= not_after {
        return Err(CertError::Expired(crate::time_fmt::rfc3339_from_ms(
            not_after.saturating_mul(1000),
        )));
    }
    if now < not_before {
        return Err(CertError::NotYetValid(crate::time_fmt::rfc3339_from_ms(
            not_before.saturating_mul(1000),
        )));
    }
    Ok(ServingCert {
        key: Arc::new(certified),
        not_before,
        not_after,
        subject,
    })
}

/// A PKCS#8 `ENCRYPTED PRIVATE KEY`, or a traditional key with a
/// `Proc-Type: 4,ENCRYPTED` header: what OpenSSL writes when given a
/// passphrase.
fn is_encrypted_key(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
}

/// The leaf's validity period and subject.
fn validity(leaf: &CertificateDer<'_>) -> Result<(i64, i64, String), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| CertError::Unparsable(e.to_string()))?;
    let v = cert.validity();
    Ok((
        v.not_before.timestamp(),
        v.not_after.timestamp(),
        cert.subject().to_string(),
    ))
}

/// The pair every new handshake gets; replaced whole by [`Self::reload`].
#[derive(Debug)]
pub struct CertResolver {
    paths: CertPaths,
    current: ArcSwap<ServingCert>,
}

impl CertResolver {
    /// Loads the pair; an error here is a start-up error.
    pub fn load(paths: CertPaths, now: i64) -> Result<Arc<Self>, CertError> {
        let cert = load_pair(&paths, now)?;
        Ok(Arc::new(Self {
            paths,
            current: ArcSwap::from_pointee(cert),
        }))
    }

    /// Reads the files again; on success new handshakes get the new pair
    /// (and the result is it), on failure the current pair stays.
    pub fn reload(&self, now: i64) -> Result<Arc<ServingCert>, CertError> {
        let cert = Arc::new(load_pair(&self.paths, now)?);
        self.current.store(Arc::clone(&cert));
        Ok(cert)
    }

    /// The pair being served.
    pub fn current(&self) -> Arc<ServingCert> {
        self.current.load_full()
    }

    pub fn paths(&self) -> &CertPaths {
        &self.paths
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().key))
    }
}

/// The HTTPS listener's TLS settings: TLS 1.3 and 1.2 only, ALPN `h2` then
/// `http/1.1` (the client's preference order is ignored by rustls, which
/// takes the server's), session tickets for cheap resumption.
pub(crate) fn server_config(
    resolver: Arc<CertResolver>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}
