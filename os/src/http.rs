//! The HTTP client of the CLI and the agent (cargo feature `http`): reqwest over rustls with
//! the ring provider, trusting the system's roots and, when given, a private CA.

use std::time::Duration;

/// How long a client waits for a TCP connection (and TLS handshake) to the server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a kept-alive connection may sit idle in the client's pool before it is dropped
/// rather than reused. The control plane closes a connection that sends no request head for 30
/// s (hyper's header read timeout, which also runs while a kept-alive connection waits for its
/// next request); a client that reused an older one (the CLI, whose runtime does not run
/// between requests and so never sees the close) got "connection closed before message
/// completed" after a slow step, such as building a dependency layer between two requests.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file holds no PEM certificate.
    #[error("no PEM certificate in it (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// The CA file is not PEM.
    #[error("not a PEM certificate: {0}")]
    Pem(#[source] reqwest::Error),
    /// reqwest could not build the client (e.g. the certificate cannot be used).
    #[error("the client cannot be built: {0}")]
    Build(#[source] reqwest::Error),
}

/// An HTTP client for `http://` and `https://` servers: connections time out after
/// [`CONNECT_TIMEOUT`], idle ones are not reused after [`POOL_IDLE_TIMEOUT`], and `https://`
/// servers are verified against the system's roots and, when
/// `ca_pem` is given, the certificates of that PEM bundle too (a private CA).
///
/// Installs rustls' ring provider as the process default, once per process.
pub fn client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client, ClientError> {
    builder(ca_pem)?.build().map_err(ClientError::Build)
}

/// Like [`client`], for a caller that sets more (e.g. timeouts of its own) before building.
pub fn builder(ca_pem: Option<&[u8]>) -> Result<reqwest::ClientBuilder, ClientError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(ClientError::Pem)?;
        if certs.is_empty() {
            return Err(ClientError::NoCertificate);
        }
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_ca_and_with_a_bad_one() {
        client(None).expect("a client with the system's roots");
        assert!(matches!(
            client(Some(b"not a certificate")),
            Err(ClientError::NoCertificate | ClientError::Pem(_))
        ));
    }
}
