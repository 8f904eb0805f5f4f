//! Tokens: generated from the OS's random source, stored only as sha256 hashes, compared in
//! constant time (`edgefn_os::secret::ct_eq`).

use sha2::{Digest, Sha256};

/// Prefix of admin tokens (lets secret scanners recognise them).
pub(crate) const ADMIN_PREFIX: &str = "edgefn_adm_";
/// Prefix of device tokens.
pub(crate) const DEVICE_PREFIX: &str = "edgefn_dev_";

/// A new random token: `prefix` + 64 hex digits (256 bits).
pub(crate) fn generate(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{prefix}{}", edgefn_schema::resolve::hex(&bytes)))
}

/// The stored form of a token.
pub(crate) fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefn_os::secret::ct_eq;

    #[test]
    fn tokens_are_unique_and_hashes_compare() {
        let a = generate(DEVICE_PREFIX).unwrap();
        let b = generate(DEVICE_PREFIX).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(DEVICE_PREFIX) && a.len() == DEVICE_PREFIX.len() + 64);
        assert!(ct_eq(&hash(&a), &hash(&a)));
        assert!(!ct_eq(&hash(&a), &hash(&b)));
    }
}
