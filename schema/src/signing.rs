//! Signed revisions: what a device checks before it runs a desired state.
//!
//! Whoever applies a revision signs, for each device, a [`statement`] of what it will run: the
//! project, the device's name, the revision number and the digest of its desired state
//! ([`crate::DesiredState::digest`], which names every bundle by digest and every secret by
//! version). The control plane stores and serves the signatures but holds no private key, so
//! it cannot forge one, move one to another device (the device's name is signed), or serve an
//! older one as new (the revision is signed, and an agent refuses a revision older than the
//! newest it accepted).
//!
//! Keys are ed25519 (RFC 8032), through `ring`, the crate rustls already uses. A private key
//! is kept as PKCS#8 in PEM (`-----BEGIN PRIVATE KEY-----`, RFC 5208/5958: what
//! `edgefn keygen` writes and `openssl genpkey -algorithm ed25519` also writes); a public key
//! is written `ed25519:` followed by the standard base64 of its 32 bytes; a signature is the
//! standard base64 of its 64 bytes.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The prefix of a public key's text.
pub const KEY_PREFIX: &str = "ed25519:";

/// The first line of every [`statement`]: its format's name and version.
pub const STATEMENT_HEADER: &str = "edgefn signed desired state v1";

/// The bytes signed for one device of one revision (UTF-8, one `field: value` per line):
///
/// ```text
/// edgefn signed desired state v1
/// project: PROJECT
/// device: DEVICE
/// revision: N
/// digest: SHA256-HEX
/// ```
///
/// Names cannot hold a line break (manifest names are checked), so the text is unambiguous.
pub fn statement(project: &str, device: &str, revision: u64, digest: &str) -> Vec<u8> {
    format!(
        "{STATEMENT_HEADER}\nproject: {project}\ndevice: {device}\nrevision: {revision}\ndigest: {digest}\n"
    )
    .into_bytes()
}

/// An ed25519 public key: 32 bytes, written `ed25519:BASE64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", STANDARD.encode(self.0))
    }
}

/// Why a text is not a public key (the message says what the text should be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0}; a public key is written `ed25519:` and the base64 of its 32 bytes, as `edgefn keygen` prints it"
)]
pub struct PublicKeyError(String);

impl FromStr for PublicKey {
    type Err = PublicKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let b64 = text.trim().strip_prefix(KEY_PREFIX).ok_or_else(|| {
            PublicKeyError(format!(
                "`{}` does not start with `{KEY_PREFIX}`",
                clip(text)
            ))
        })?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| PublicKeyError(format!("`{}` is not base64 ({e})", clip(text))))?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            PublicKeyError(format!(
                "`{}` holds {} bytes, not 32",
                clip(text),
                bytes.len()
            ))
        })?;
        Ok(PublicKey(bytes))
    }
}

/// At most 80 characters of `text`, for a message.
fn clip(text: &str) -> String {
    if text.chars().count() <= 80 {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(77).collect();
        s.push_str("...");
        s
    }
}

impl PublicKey {
    /// Whether `signature` (standard base64 of 64 bytes) is this key's signature of `message`.
    /// Anything that is not a valid signature, malformed base64 included, is `false`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(sig) = STANDARD.decode(signature.trim()) else {
            return false;
        };
        sig.len() == 64
            && UnparsedPublicKey::new(&ED25519, &self.0)
                .verify(message, &sig)
                .is_ok()
    }
}

/// Why a private key file's text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    /// No PEM block of a private key.
    #[error(
        "it holds no `-----BEGIN PRIVATE KEY-----` block (an ed25519 key in PKCS#8 PEM, as `edgefn keygen` writes)"
    )]
    NotPem,
    /// The PEM block is not base64.
    #[error("its PEM block is not base64")]
    Base64,
    /// The block is not an ed25519 PKCS#8 key.
    #[error(
        "its key is not an ed25519 private key in PKCS#8 ({0}); write one with `edgefn keygen`"
    )]
    NotEd25519(String),
    /// No randomness for a new key.
    #[error("no randomness for a new key")]
    Random,
}

/// An ed25519 private key.
pub struct SigningKey(Ed25519KeyPair);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SigningKey").field(&self.public()).finish()
    }
}

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

impl SigningKey {
    /// A new random key, with its PEM text (PKCS#8 v2) to store.
    pub fn generate() -> Result<(SigningKey, String), SigningKeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SigningKeyError::Random)?;
        let key = Ed25519KeyPair::from_pkcs8(doc.as_ref())
            .map_err(|e| SigningKeyError::NotEd25519(e.to_string()))?;
        let b64 = STANDARD.encode(doc.as_ref());
        let mut pem = String::from(PEM_BEGIN);
        pem.push('\n');
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        Ok((SigningKey(key), pem))
    }

    /// Reads a key from PEM text: PKCS#8 v1 or v2 (with or without the public key).
    pub fn from_pem(text: &str) -> Result<SigningKey, SigningKeyError> {
        let start = text.find(PEM_BEGIN).ok_or(SigningKeyError::NotPem)? + PEM_BEGIN.len();
        let len = text[start..].find(PEM_END).ok_or(SigningKeyError::NotPem)?;
        let b64: String = text[start..start + len]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = STANDARD.decode(b64).map_err(|_| SigningKeyError::Base64)?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map(SigningKey)
            .map_err(|e| SigningKeyError::NotEd25519(e.to_string()))
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        let bytes: [u8; 32] = self
            .0
            .public_key()
            .as_ref()
            .try_into()
            .expect("an ed25519 public key is 32 bytes");
        PublicKey(bytes)
    }

    /// Its signature of `message`, as standard base64.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.0.sign(message).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_statement_and_key() {
        let (key, pem) = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(key.public(), again.public());
        let public: PublicKey = key.public().to_string().parse().unwrap();
        let s = statement("p", "gw-01", 3, "ab");
        let sig = key.sign(&s);
        assert!(public.verifies(&s, &sig));
        assert!(!public.verifies(&statement("p", "gw-02", 3, "ab"), &sig));
        assert!(!public.verifies(&statement("p", "gw-01", 2, "ab"), &sig));
        assert!(!public.verifies(&statement("p", "gw-01", 3, "ac"), &sig));
        assert!(!public.verifies(&s, "not base64!"));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(!other.public().verifies(&s, &sig));
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        assert_eq!(
            SigningKey::from_pem("hello").unwrap_err(),
            SigningKeyError::NotPem
        );
        assert!(matches!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            Err(SigningKeyError::NotEd25519(_))
        ));
        for bad in ["ed25519", "rsa:AAAA", "ed25519:!!", "ed25519:AAAA"] {
            let e = bad.parse::<PublicKey>().unwrap_err().to_string();
            assert!(e.contains("ed25519:"), "{e}");
        }
    }

    /// A key written by `openssl genpkey -algorithm ed25519` (PKCS#8 v1) is read.
    #[test]
    fn an_openssl_key_is_read() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEmRHyBVnYsm7Y9KZkkgjgNuw0NGtDjfgILeArjoY15r\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(pem).unwrap();
        assert!(key.public().to_string().starts_with("ed25519:"));
    }
}
