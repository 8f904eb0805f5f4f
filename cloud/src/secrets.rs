//! Secrets at rest: the key, kept apart from the data, and the sealing of each value with it.
//!
//! Each version of a secret is sealed with ChaCha20-Poly1305 (ring, already the TLS provider, so
//! no new crate) under a 256-bit key, with a random 96-bit nonce and the secret's name and
//! version as associated data: a sealed value moved to another name or version does not open.
//! The key lives in a file outside the data folder (`--secret-key-file`, default
//! `DATA.secret-key` beside the data folder), so a backup of the data folder holds no readable
//! value. The file is created, mode 0600, the first time a secret is set; a value sealed with it
//! then (the "key check") lets every later start tell a wrong key from the right one before
//! anything is served.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::store::{Store, StoreError};

/// The key's length in bytes; the file holds it as 64 hex digits.
const KEY_BYTES: usize = 32;
/// What the key check seals.
const KEY_CHECK_PLAIN: &[u8] = b"edgefn secret key check";

/// Why the secrets key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("secret key file {}: {source}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error("secret key file {} does not hold a key (64 hex digits): restore the file the control plane created, or start with the right `--secret-key-file`", .0.display())]
    Malformed(PathBuf),
    /// The store holds secrets but the key file is missing.
    #[error("secret key file {} does not exist, but the data folder holds secrets sealed with a key: restore the key file (or name it with `--secret-key-file`); without it the stored secrets cannot be read", .0.display())]
    Missing(PathBuf),
    /// The key does not open what the store holds.
    #[error("secret key file {} holds a different key from the one the stored secrets were sealed with: name the right file with `--secret-key-file`", .0.display())]
    Mismatch(PathBuf),
    /// The key file would be inside the data folder, which is backed up with the data.
    #[error("secret key file {} is inside the data folder {}: keep the key apart from the data it protects (name another path with `--secret-key-file`)", .path.display(), .data.display())]
    InsideData {
        /// The key file.
        path: PathBuf,
        /// The data folder.
        data: PathBuf,
    },
    /// No randomness for a key or a nonce.
    #[error("could not generate a secret key: {0}")]
    Random(#[source] getrandom::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The default key file of data folder `data`: beside it, `DATA.secret-key`.
pub(crate) fn default_key_file(data: &Path) -> PathBuf {
    let mut name = data
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "edgefn-data".into());
    name.push(".secret-key");
    match data.parent() {
        Some(p) => p.join(name),
        None => PathBuf::from(name),
    }
}

/// The secrets key of a running control plane, created on first use.
pub(crate) struct Keyring {
    path: PathBuf,
    key: Mutex<Option<Arc<LessSafeKey>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn key_of(bytes: &[u8; KEY_BYTES]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key"))
}

fn read_key(path: &Path) -> Result<Option<LessSafeKey>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyError::File {
                path: path.to_owned(),
                source,
            });
        }
    };
    let hex = text.trim();
    let mut bytes = [0u8; KEY_BYTES];
    if hex.len() != 2 * KEY_BYTES {
        return Err(KeyError::Malformed(path.to_owned()));
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
            .map_err(|_| KeyError::Malformed(path.to_owned()))?;
    }
    Ok(Some(key_of(&bytes)))
}

impl Keyring {
    /// Opens the key at `path` and checks it against what `store` was sealed with. A missing
    /// file is fine while the store holds no sealed value (the key is created on first use).
    pub(crate) fn open(path: &Path, data: &Path, store: &dyn Store) -> Result<Keyring, KeyError> {
        let absolute = |p: &Path| {
            std::path::absolute(p)
                .ok()
                .map(|a| std::fs::canonicalize(&a).unwrap_or(a))
        };
        if let (Some(k), Some(d)) = (
            absolute(path.parent().unwrap_or(Path::new("."))),
            absolute(data),
        ) {
            if k.starts_with(&d) {
                return Err(KeyError::InsideData {
                    path: path.to_owned(),
                    data: data.to_owned(),
                });
            }
        }
        let key = read_key(path)?;
        match (&key, store.key_check()?) {
            (Some(k), Some(check)) => {
                if open_with(k, b"edgefn-key-check", &check).as_deref() != Some(KEY_CHECK_PLAIN) {
                    return Err(KeyError::Mismatch(path.to_owned()));
                }
            }
            (None, Some(_)) => return Err(KeyError::Missing(path.to_owned())),
            (Some(k), None) => {
                store.set_key_check(&seal_with(k, b"edgefn-key-check", KEY_CHECK_PLAIN)?)?
            }
            (None, None) => {}
        }
        Ok(Keyring {
            path: path.to_owned(),
            key: Mutex::new(key.map(Arc::new)),
        })
    }

    /// The key, created (file mode 0600, its folder 0700 when made) and recorded in `store` on
    /// first use. File work: call it off the async threads.
    pub(crate) fn key(&self, store: &dyn Store) -> Result<Arc<LessSafeKey>, KeyError> {
        let mut slot = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = &*slot {
            return Ok(k.clone());
        }
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
        let file_error = |source| KeyError::File {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                edgefn_os::file::create_folder(dir, 0o700).map_err(file_error)?;
            }
        }
        let text = format!("{}\n", edgefn_schema::resolve::hex(&bytes));
        edgefn_os::file::write_atomic(&self.path, text.as_bytes(), edgefn_os::file::PRIVATE)
            .map_err(file_error)?;
        let key = key_of(&bytes);
        store.set_key_check(&seal_with(&key, b"edgefn-key-check", KEY_CHECK_PLAIN)?)?;
        let key = Arc::new(key);
        *slot = Some(key.clone());
        Ok(key)
    }

    /// The key when it exists (no secret was ever set otherwise).
    pub(crate) fn existing(&self) -> Option<Arc<LessSafeKey>> {
        self.key.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The associated data of secret `name`'s version `version`.
fn aad(name: &str, version: u64) -> Vec<u8> {
    format!("edgefn-secret\0{name}\0{version}").into_bytes()
}

/// A fresh random nonce (96 bits: random nonces are safe far beyond the number of versions a
/// control plane seals).
pub(crate) fn nonce() -> Result<[u8; NONCE_LEN], KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(KeyError::Random)?;
    Ok(nonce)
}

fn seal_with(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, KeyError> {
    Ok(seal_with_nonce(key, aad, plain, nonce()?))
}

fn seal_with_nonce(key: &LessSafeKey, aad: &[u8], plain: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut out,
    )
    .expect("a value under the AEAD's size limit");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&out);
    sealed
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, rest) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = rest.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
    Some(plain.to_vec())
}

/// Seals version `version` of secret `name` with `nonce` (from [`nonce`], used once): nonce ‖
/// ciphertext ‖ tag.
pub(crate) fn seal(
    key: &LessSafeKey,
    name: &str,
    version: u64,
    value: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    seal_with_nonce(key, &aad(name, version), value, nonce)
}

/// Opens what [`seal`] made for `name` and `version`; `None` when it does not open (another
/// key, another name or version, or damaged).
pub(crate) fn open(key: &LessSafeKey, name: &str, version: u64, sealed: &[u8]) -> Option<Vec<u8>> {
    open_with(key, &aad(name, version), sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_name_version_and_key() {
        let key = key_of(&[7; KEY_BYTES]);
        let sealed = seal(&key, "db-password", 3, b"hunter2", nonce().expect("nonce"));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            open(&key, "db-password", 3, &sealed).as_deref(),
            Some(&b"hunter2"[..])
        );
        assert_eq!(open(&key, "db-password", 2, &sealed), None);
        assert_eq!(open(&key, "api-key", 3, &sealed), None);
        assert_eq!(
            open(&key_of(&[8; KEY_BYTES]), "db-password", 3, &sealed),
            None
        );
        assert_eq!(open(&key, "db-password", 3, &sealed[..10]), None);
    }

    #[test]
    fn the_default_key_file_is_beside_the_data_folder() {
        assert_eq!(
            default_key_file(Path::new("/var/lib/edgefn")),
            Path::new("/var/lib/edgefn.secret-key")
        );
        assert_eq!(
            default_key_file(Path::new("edgefn-data")),
            Path::new("edgefn-data.secret-key")
        );
    }
}
