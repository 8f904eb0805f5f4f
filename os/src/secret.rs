//! Comparing secrets (token hashes, passwords' hashes) so that the time taken does not say
//! where the inputs differ.

use subtle::ConstantTimeEq;

/// Whether `a` equals `b`, in time that depends only on their lengths (inputs of different
/// lengths are unequal at once: compare hashes of one length, e.g. sha256, to hide lengths).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn equal_and_unequal() {
        assert!(ct_eq(&[1, 2, 3], &[1, 2, 3]));
        assert!(!ct_eq(&[1, 2, 3], &[1, 2, 4]));
        assert!(!ct_eq(&[1, 2, 3], &[1, 2]));
        assert!(ct_eq(&[], &[]));
    }
}
