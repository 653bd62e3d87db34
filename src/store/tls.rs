//! Transport security of PostgreSQL connections: what `sslmode` and
//! `sslrootcert` in `HUNTAZE_DATABASE_URL` ask for, made explicit so that
//! nothing else decides them, and TLS failures told apart from outages.
//!
//! sqlx starts every PostgreSQL connection from the libpq environment
//! (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`) and lets the URL
//! override it. The URL alone decides here: its `sslmode` is always written
//! out (libpq's `prefer` when it names none), and a certificate variable
//! the URL does not override is refused rather than silently trusted. Every
//! connection the process opens — the pool, and through it migrations and
//! the command-line tools — is made from the one URL this returns.

use sqlx::postgres::PgSslMode;

/// The URL's transport settings, for messages (never the URL itself: it may
/// hold the password).
#[derive(Clone, Debug)]
pub(crate) struct PgTls {
    mode: String,
    root_cert: Option<String>,
}

/// The URL's names for one parameter: libpq's and sqlx's spellings.
const MODE_KEYS: &[&str] = &["sslmode", "ssl-mode"];
const ROOT_CERT_KEYS: &[&str] = &["sslrootcert", "ssl-root-cert", "ssl-ca"];
const CLIENT_CERT_KEYS: &[&str] = &["sslcert", "ssl-cert"];
const CLIENT_KEY_KEYS: &[&str] = &["sslkey", "ssl-key"];

/// libpq variables sqlx reads when the URL does not name the parameter.
const ENV_OVERRIDDEN_BY: &[(&str, &[&str])] = &[
    ("PGSSLROOTCERT", ROOT_CERT_KEYS),
    ("PGSSLCERT", CLIENT_CERT_KEYS),
    ("PGSSLKEY", CLIENT_KEY_KEYS),
];

impl PgTls {
    /// Checks the URL's transport settings and returns the URL to connect
    /// with (its `sslmode` written out) and the settings. A problem is told
    /// as what is wrong with `HUNTAZE_DATABASE_URL`, naming the parameter,
    /// never quoting the URL.
    pub(crate) fn explicit(url: &str) -> Result<(String, PgTls), String> {
        Self::explicit_with_env(url, |name| std::env::var_os(name).is_some())
    }

    fn explicit_with_env(
        url: &str,
        env_set: impl Fn(&str) -> bool,
    ) -> Result<(String, PgTls), String> {
        let mut parsed = url::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
        let last = |keys: &[&str]| {
            parsed
                .query_pairs()
                .filter(|(k, _)| keys.contains(&k.as_ref()))
                .map(|(_, v)| v.into_owned())
                .last()
        };
        let mode = last(MODE_KEYS);
        let root_cert = last(ROOT_CERT_KEYS);
        let client_cert = last(CLIENT_CERT_KEYS);
        let client_key = last(CLIENT_KEY_KEYS);
        if let Some(mode) = &mode {
            mode.parse::<PgSslMode>().map_err(|_| {
                format!(
                    "sslmode={mode} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )
            })?;
        }
        for (variable, keys) in ENV_OVERRIDDEN_BY {
            if env_set(variable) && last(keys).is_none() {
                let key = keys[0];
                return Err(format!(
                    "names no {key} but {variable} is set in the environment: give it in the URL \
                     (…&{key}=PATH) or unset {variable}; the URL alone says how the database is \
                     reached"
                ));
            }
        }
        if client_cert.is_some() != client_key.is_some() {
            return Err("sslcert and sslkey must be given together".to_owned());
        }
        let mode = mode.unwrap_or_else(|| {
            // libpq's default, written out so that PGSSLMODE cannot change it.
            parsed.query_pairs_mut().append_pair("sslmode", "prefer");
            "prefer".to_owned()
        });
        let tls = PgTls {
            mode: mode.to_ascii_lowercase(),
            root_cert,
        };
        if tls.verifies() {
            tls.check_root_cert()?;
        }
        Ok((parsed.into(), tls))
    }

    /// Whether the server's certificate is checked against a CA.
    fn verifies(&self) -> bool {
        matches!(self.mode.as_str(), "verify-ca" | "verify-full")
    }

    /// The CA file is read now: one that cannot be used would otherwise fail
    /// every connection, later and one at a time.
    fn check_root_cert(&self) -> Result<(), String> {
        let Some(root) = &self.root_cert else {
            // The bundled public roots (webpki-roots) verify the server.
            return Ok(());
        };
        let checked = if is_inline_pem(root) {
            crate::tls::check_ca_pem(root.as_bytes())
        } else {
            crate::tls::read_ca_bundle(std::path::Path::new(root)).map(drop)
        };
        checked.map_err(|e| match e {
            crate::tls::CaError::Read(e) => format!("sslrootcert {root} cannot be read: {e}"),
            crate::tls::CaError::NoCertificate => format!(
                "sslrootcert {} holds no PEM certificate",
                self.root_cert_label()
            ),
        })
    }

    fn root_cert_label(&self) -> &str {
        match &self.root_cert {
            Some(root) if is_inline_pem(root) => "(inline PEM)",
            Some(root) => root,
            None => "(unset: the public roots)",
        }
    }

    /// `sslmode=…, sslrootcert=…` as the URL gives them.
    pub(crate) fn describe(&self) -> String {
        if self.verifies() || self.root_cert.is_some() {
            format!(
                "sslmode={}, sslrootcert={}",
                self.mode,
                self.root_cert_label()
            )
        } else {
            format!("sslmode={}", self.mode)
        }
    }

    /// The message for a connection whose TLS failed, naming the settings
    /// to look at; `None` when `e` is not a TLS failure.
    pub(crate) fn failure(&self, e: &sqlx::Error) -> Option<String> {
        is_tls_failure(e).then(|| {
            format!(
                "TLS to the database failed (HUNTAZE_DATABASE_URL {}): {}",
                self.describe(),
                innermost(e)
            )
        })
    }
}

/// sqlx takes a value that looks like PEM as the certificate itself.
fn is_inline_pem(value: &str) -> bool {
    let v = value.trim();
    v.starts_with("-----BEGIN") && v.ends_with("-----")
}

/// Whether the connection failed in its TLS set-up: a certificate that
/// does not verify (unknown CA, wrong name, expired), a server that will
/// not speak TLS under `require` or `verify-*`, a CA that cannot be used.
/// sqlx returns the handshake's own failures as I/O errors carrying
/// rustls's error, and the others as `Error::Tls`.
pub(crate) fn is_tls_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    }
}

/// The last cause's text: sqlx's messages repeat their source's.
fn innermost(e: &sqlx::Error) -> String {
    if let sqlx::Error::Io(io) = e
        && let Some(inner) = io.get_ref()
    {
        return inner.to_string();
    }
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(url: &str) -> Result<(String, PgTls), String> {
        PgTls::explicit_with_env(url, |_| false)
    }

    #[test]
    fn the_mode_is_always_written_out() {
        let (url, tls) = explicit("postgres://u:secret@db.example/app").unwrap();
        assert_eq!(url, "postgres://u:secret@db.example/app?sslmode=prefer");
        assert_eq!(tls.describe(), "sslmode=prefer");
        let (url, tls) = explicit("postgres://db.example/app?sslmode=Require").unwrap();
        assert_eq!(url, "postgres://db.example/app?sslmode=Require");
        assert_eq!(tls.describe(), "sslmode=require");
    }

    #[test]
    fn a_bad_mode_or_an_unreadable_ca_is_named_without_the_url() {
        let e = explicit("postgres://u:secret@db/app?sslmode=verify").unwrap_err();
        assert!(e.starts_with("sslmode=verify is not one of"), "{e}");
        assert!(!e.contains("secret"), "{e}");

        let e = explicit(
            "postgres://u:secret@db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap_err();
        assert!(
            e.starts_with("sslrootcert /nonexistent/ca.pem cannot be read"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = explicit(&format!(
            "postgres://db/app?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        // Not read where nothing is verified.
        assert!(
            explicit(&format!(
                "postgres://db/app?sslmode=require&sslrootcert={}",
                empty.display()
            ))
            .is_ok()
        );
    }

    #[test]
    fn libpq_certificate_variables_the_url_does_not_override_are_refused() {
        let env = |name: &str| name == "PGSSLROOTCERT";
        let e = PgTls::explicit_with_env("postgres://db/app?sslmode=verify-full", env).unwrap_err();
        assert!(
            e.starts_with("names no sslrootcert but PGSSLROOTCERT is set"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let url = format!(
            "postgres://db/app?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        let (_, tls) = PgTls::explicit_with_env(&url, env).unwrap();
        assert_eq!(
            tls.describe(),
            format!("sslmode=verify-full, sslrootcert={}", ca.display())
        );
        let e = explicit("postgres://db/app?sslcert=/c.pem").unwrap_err();
        assert!(e.contains("sslcert and sslkey"), "{e}");
    }

    #[test]
    fn handshake_failures_are_tls_failures_and_other_io_is_not() {
        let rejected = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(is_tls_failure(&rejected));
        assert!(is_tls_failure(&sqlx::Error::Tls(
            "server does not support TLS".into()
        )));
        let refused = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(!is_tls_failure(&refused));
        let reset = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(!is_tls_failure(&reset));
        let tls = PgTls {
            mode: "verify-full".into(),
            root_cert: Some("/etc/ca.pem".into()),
        };
        assert_eq!(
            tls.failure(&rejected).unwrap(),
            "TLS to the database failed (HUNTAZE_DATABASE_URL sslmode=verify-full, \
             sslrootcert=/etc/ca.pem): invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(tls.failure(&refused), None);
    }
}
