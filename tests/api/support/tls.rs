//! Throw-away certificate authorities and certificates for the TLS tests,
//! made by the `openssl` command line (what an operator would use), in a
//! temporary directory per CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::pg::services_required;

/// Whether `openssl` is installed; prints why a test is skipped, or panics
/// when services are required (CI).
pub fn available(test: &str) -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !services_required(),
            "openssl is required (HUNTAZE_TEST_REQUIRE_SERVICES=1) but not installed"
        );
        eprintln!("SKIPPED {test}: openssl not installed");
    }
    ok
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority of the test's own.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (what a client trusts).
    pub cert: PathBuf,
    issued: u32,
}

/// How a server certificate is made.
#[derive(Clone, Debug)]
pub struct Leaf<'a> {
    /// Subject alternative names: DNS names and IP addresses.
    pub names: &'a [&'a str],
    /// Validity in days from now; negative: already expired that long ago
    /// (valid for one day before that).
    pub days: i64,
    /// Elliptic-curve key (P-256) rather than RSA 2048.
    pub ec: bool,
}

impl Default for Leaf<'_> {
    fn default() -> Self {
        Self {
            names: &["localhost", "127.0.0.1"],
            days: 90,
            ec: true,
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA named `name` (its subject's common name).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\n\
             serial = serial\npolicy = any\ndefault_md = sha256\nunique_subject = no\n\
             [any]\ncommonName = supplied\n",
        )
        .expect("write CA config");
        std::fs::write(d.join("index.txt"), "").expect("write CA index");
        std::fs::write(d.join("serial"), "1000\n").expect("write CA serial");
        Self {
            cert: d.join("ca.pem"),
            dir,
            issued: 0,
        }
    }

    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).expect("read CA certificate")
    }

    /// A server certificate signed by this CA; the certificate file holds
    /// the leaf then the CA (a chain, as servers are given it).
    pub fn issue(&mut self, leaf: &Leaf<'_>) -> Pair {
        self.issued += 1;
        let n = self.issued;
        let d = self.dir.path().to_owned();
        let key = format!("leaf{n}.key");
        if leaf.ec {
            openssl(
                &d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &key,
                ],
            );
        } else {
            openssl(
                &d,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    &key,
                ],
            );
        }
        let csr = format!("leaf{n}.csr");
        openssl(
            &d,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=huntaze-test",
            ],
        );
        let san = leaf
            .names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let ext = format!("leaf{n}.ext");
        std::fs::write(
            d.join(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write extensions");
        let crt = format!("leaf{n}.crt");
        // `openssl ca` rather than `x509 -req`: only it takes a start and
        // end date (OpenSSL 3.0's `x509` has no -not_before), which an
        // expired certificate needs.
        let (start, end) = if leaf.days > 0 {
            (time_string(0), time_string(leaf.days))
        } else {
            (time_string(leaf.days - 1), time_string(leaf.days))
        };
        openssl(
            &d,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                &csr,
                "-out",
                &crt,
                "-startdate",
                &start,
                "-enddate",
                &end,
                "-extfile",
                &ext,
                "-notext",
            ],
        );
        let chain = format!("leaf{n}-chain.pem");
        let mut pem = std::fs::read(d.join(&crt)).expect("read leaf");
        pem.extend(self.cert_pem());
        std::fs::write(d.join(&chain), pem).expect("write chain");
        Pair {
            cert: d.join(chain),
            key: d.join(key),
        }
    }
}

/// `YYYYMMDDHHMMSSZ`, `days` from now (negative: in the past).
fn time_string(days: i64) -> String {
    let now = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The TLS versions a client can be held to.
pub use reqwest::tls::Version as TlsVersion;

/// A client that trusts only `cas` (PEM certificates), reports the peer's
/// certificate (`reqwest::tls::TlsInfo`) and follows no redirect.
pub fn client(cas: &[&[u8]]) -> reqwest::ClientBuilder {
    let roots = cas
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem).expect("CA certificate"));
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
}

/// The DER of the first certificate in a PEM file (the leaf of a chain).
pub fn leaf_der(cert: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .expect("read certificate")
        .next()
        .expect("a certificate")
        .expect("a PEM certificate")
        .to_vec()
}

/// The certificate the server presented for `res`'s connection.
pub fn peer_der(res: &reqwest::Response) -> Vec<u8> {
    res.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info (a client built with tls_info)")
        .to_vec()
}
