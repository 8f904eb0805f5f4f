//! TLS to PostgreSQL over rustls (ring provider), with libpq's `sslmode` and `sslrootcert`
//! connection parameters (in the `--store` URL's query, or `$PGSSLMODE` / `$PGSSLROOTCERT`),
//! so that a URL that works with `psql` works here too.
//!
//! The modes are libpq's (<https://www.postgresql.org/docs/current/libpq-ssl.html>, table
//! "SSL Mode Descriptions"):
//!
//! | `sslmode` | encrypted | server's certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | – |
//! | `prefer` (the default) | when the server offers TLS | only with `sslrootcert`: its chain |
//! | `require` | always | only with `sslrootcert`: its chain |
//! | `verify-ca` | always | chain to the CA in `sslrootcert` |
//! | `verify-full` | always | chain, and the host name (or IP address) connected to |
//!
//! The default is libpq's, `prefer`, so a `--store` URL that works with `psql` works here too
//! and a database on a local socket or loopback address keeps working without certificates.
//! It does not protect against an active attacker (who can refuse TLS, or present any
//! certificate): across a network, use `verify-full`. As in libpq, `sslrootcert` without a
//! `verify-*` mode still checks the chain, and `sslrootcert=system` uses the operating system's
//! trusted CAs. With `verify-ca`/`verify-full` and no `sslrootcert`, `~/.postgresql/root.crt`
//! is used, as libpq does. As in libpq, `sslmode` does not apply to a unix-socket host
//! (PostgreSQL serves no TLS there): such a connection is plain.
//!
//! The TLS stream comes from `tokio-postgres-rustls`, which also gives the server's certificate
//! hash for SCRAM channel binding (`SCRAM-SHA-256-PLUS`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// What makes each connection's TLS session.
pub(crate) type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// Largest `sslrootcert` file read (a bundle of every public CA is about 250 KiB).
const MAX_ROOT_FILE: u64 = 4 << 20;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS with a certificate chained to the given CA.
    VerifyCa,
    /// [`SslMode::VerifyCa`], and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's names; the error says which are accepted.
    pub(crate) fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow (try without TLS first) is not supported: use prefer, or disable"
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "unknown sslmode `{}`: use disable, prefer, require, verify-ca or verify-full",
                    other.chars().take(40).collect::<String>()
                ));
            }
        })
    }

    /// The name libpq gives it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of a `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The mode.
    pub(crate) mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted CAs, or `system`.
    pub(crate) root_cert: Option<String>,
}

/// Removes `sslmode` and `sslrootcert` from `url`'s query (the client parses the rest) and
/// returns them, falling back on `$PGSSLMODE` and `$PGSSLROOTCERT`.
///
/// Errors: an unknown `sslmode`, a parameter given twice, a value that is not valid
/// percent-encoded UTF-8.
pub(crate) fn split_url(url: &str) -> Result<(String, Settings), String> {
    split_url_with(url, |k| std::env::var(k).ok())
}

/// [`split_url`] with the environment given (tests).
pub(crate) fn split_url_with(
    url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, Settings), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sslmode" => &mut mode,
            "sslrootcert" => &mut root_cert,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        if slot.is_some() {
            return Err(format!("`{key}` is given twice in the URL: keep one"));
        }
        *slot = Some(percent_decode(value).ok_or_else(|| {
            format!("the value of `{key}` in the URL is not valid percent-encoded UTF-8")
        })?);
    }
    let mode = match (mode, env("PGSSLMODE")) {
        (Some(m), _) => SslMode::parse(&m)?,
        (None, Some(m)) => SslMode::parse(&m).map_err(|e| format!("$PGSSLMODE: {e}"))?,
        (None, None) => SslMode::Prefer,
    };
    let root_cert = root_cert
        .or_else(|| env("PGSSLROOTCERT"))
        .filter(|r| !r.is_empty());
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, Settings { mode, root_cert }))
}

/// `%XX` escapes decoded (and `+` kept, as libpq does in URLs).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Settings {
    /// The client's `sslmode` (its three modes; the checks of the other two are in the
    /// verifier [`Settings::connector`] makes).
    pub(crate) fn client_mode(&self) -> postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        }
    }

    /// The file of trusted CAs in use, as shown in messages (`None`: no chain is checked).
    fn roots_path(&self) -> Option<PathBuf> {
        match &self.root_cert {
            Some(p) => Some(PathBuf::from(p)),
            None if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"))
            }
            None => None,
        }
    }

    /// Reads the trusted CAs and makes the TLS connector.
    ///
    /// Errors (each saying how to fix it): `sslrootcert` missing, unreadable, too large or
    /// holding no certificate; `verify-ca`/`verify-full` with no CA to verify against.
    pub(crate) fn connector(&self) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.mode == SslMode::Disable {
            Arc::new(Unchecked(provider))
        } else {
            match self.roots()? {
                None => Arc::new(Unchecked(provider)),
                Some(roots) => {
                    let webpki =
                        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                            .build()
                            .map_err(|e| format!("sslrootcert: {e}"))?;
                    if self.mode == SslMode::VerifyFull {
                        webpki
                    } else {
                        Arc::new(ChainOnly(webpki))
                    }
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    /// The trusted CAs, or `None` when no chain is to be checked.
    fn roots(&self) -> Result<Option<rustls::RootCertStore>, String> {
        let mut roots = rustls::RootCertStore::empty();
        if self.root_cert.as_deref() == Some("system") {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "sslrootcert=system: the operating system has no trusted CA certificates (install ca-certificates), or give sslrootcert=PATH"
                        .to_owned(),
                );
            }
            return Ok(Some(roots));
        }
        let Some(path) = self.roots_path() else {
            return Ok(None);
        };
        let explicit = self.root_cert.is_some();
        let how = "give the PEM file of the CA that signed the server's certificate with sslrootcert=PATH in the --store URL (or $PGSSLROOTCERT)";
        let bytes = match read_bounded(&path) {
            Ok(b) => b,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "sslmode={} needs the CA that signed the server's certificate, and {} does not exist: {how}",
                    self.mode.name(),
                    path.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "sslrootcert {}: cannot read it ({e}): {how}",
                    path.display()
                ));
            }
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!(
                    "sslrootcert {}: not a PEM file ({e}): {how}",
                    path.display()
                )
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "sslrootcert {}: no usable certificate in it (expected PEM: -----BEGIN CERTIFICATE-----): {how}",
                path.display()
            ));
        }
        Ok(Some(roots))
    }
}

/// The file's bytes, at most [`MAX_ROOT_FILE`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::other("it is a folder"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_ROOT_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_ROOT_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_ROOT_FILE >> 20
        )));
    }
    Ok(bytes)
}

/// Why a connection's TLS failed, said for an operator, naming the host; `None` when `e` is
/// not about TLS.
pub(crate) fn explain(e: &postgres::Error, settings: &Settings, host: &str) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut tls_kind = false;
    while let Some(s) = source {
        if let Some(r) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| s.downcast_ref::<rustls::Error>())
        {
            return Some(explain_rustls(r, settings, host));
        }
        let text = s.to_string();
        if text == "server does not support TLS" {
            return Some(format!(
                "{host} does not accept TLS connections, and sslmode={} requires TLS: turn TLS on in the server (ssl = on, with ssl_cert_file and ssl_key_file), or use sslmode=prefer or disable on a trusted network",
                settings.mode.name()
            ));
        }
        tls_kind |= text.starts_with("error performing TLS handshake");
        source = s.source();
    }
    tls_kind.then(|| format!("TLS with {host} failed: {}", chain(e)))
}

fn explain_rustls(r: &rustls::Error, settings: &Settings, host: &str) -> String {
    let roots = settings
        .roots_path()
        .map_or_else(|| "sslrootcert".to_owned(), |p| p.display().to_string());
    let roots = if settings.root_cert.as_deref() == Some("system") {
        "the operating system's trusted CAs (sslrootcert=system)".to_owned()
    } else {
        format!("the CA in {roots}")
    };
    match r {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the certificate of {host} does not name that host ({r}): connect with a host name the certificate lists, or issue the server a certificate for this name (sslmode=verify-ca checks the CA only)"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "the certificate of {host} does not verify against {roots} ({r}): give the CA that signed the server's certificate with sslrootcert=PATH"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => format!(
            "the certificate of {host} is outside its validity period ({r}): renew the server's certificate (or check this machine's clock)"
        ),
        other => format!("TLS with {host} failed: {other}"),
    }
}

/// `e` and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut m = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !m.contains(&text) {
            m.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    m
}

/// Accepts any certificate (`prefer`/`require` without `sslrootcert`, as libpq): the
/// connection is encrypted, the server's identity is not checked. The handshake's signatures
/// are still checked, so the server holds the key of the certificate it shows.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with `sslrootcert`): the chain must lead to a trusted
/// CA; the name in the certificate is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> Result<(String, Settings), String> {
        split_url_with(url, |_| None)
    }

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_the_url() {
        let (rest, s) =
            split("postgres://u@h/db?sslmode=verify-full&connect_timeout=3&sslrootcert=%2Fca.pem")
                .unwrap();
        assert_eq!(rest, "postgres://u@h/db?connect_timeout=3");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/ca.pem"));
        let (rest, s) = split("postgres://u@h/db").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(
            s,
            Settings {
                mode: SslMode::Prefer,
                root_cert: None
            }
        );
    }

    #[test]
    fn the_environment_fills_in_what_the_url_leaves_out() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("require".to_owned()),
            "PGSSLROOTCERT" => Some("/env.pem".to_owned()),
            _ => None,
        };
        let (_, s) = split_url_with("postgres://u@h/db?sslmode=disable", env).unwrap();
        assert_eq!(s.mode, SslMode::Disable);
        assert_eq!(s.root_cert.as_deref(), Some("/env.pem"));
        let (_, s) = split_url_with("postgres://u@h/db", env).unwrap();
        assert_eq!(s.mode, SslMode::Require);
        let e = split_url_with("postgres://u@h/db", |k| {
            (k == "PGSSLMODE").then(|| "on".to_owned())
        })
        .unwrap_err();
        assert!(e.starts_with("$PGSSLMODE: unknown sslmode `on`"), "{e}");
    }

    #[test]
    fn bad_parameters_are_refused_with_the_accepted_ones() {
        let e = split("postgres://u@h/db?sslmode=strict").unwrap_err();
        assert!(
            e.contains("unknown sslmode `strict`") && e.contains("verify-full"),
            "{e}"
        );
        let e = split("postgres://u@h/db?sslmode=require&sslmode=disable").unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = split("postgres://u@h/db?sslrootcert=%ZZ").unwrap_err();
        assert!(e.contains("percent-encoded"), "{e}");
    }

    #[test]
    fn a_missing_or_empty_root_file_is_said_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let s = Settings {
            mode: SslMode::VerifyFull,
            root_cert: Some(missing.display().to_string()),
        };
        let e = s.connector().err().unwrap();
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("sslrootcert=PATH"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let s = Settings {
            mode: SslMode::VerifyCa,
            root_cert: Some(empty.display().to_string()),
        };
        let e = s.connector().err().unwrap();
        assert!(e.contains("no usable certificate"), "{e}");
    }
}
