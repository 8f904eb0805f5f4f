//! Tokens: generated from the OS's random source, stored only as sha256 hashes, compared in
//! constant time.

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

/// Equality whose time does not depend on where the inputs differ.
pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

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
