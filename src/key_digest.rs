//! 64-bit digests of object keys (`Kind/namespace/name`) for the per-object side maps the operator keeps
//! next to its caches: with tens of thousands of objects, a formatted key String per entry costs more
//! than the entry itself, and a map only needs to tell objects apart.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

/// The digest of `key`. The same key gives the same digest for the life of the process; two of the
/// operator's keys colliding is about as likely as 2^-64 per pair (SipHash), so a map keyed by digests
/// behaves as one keyed by the Strings.
pub fn of(key: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

#[cfg(test)]
mod tests {
    use super::of;

    #[test]
    fn a_key_has_one_digest_and_different_keys_have_different_ones() {
        assert_eq!(of("IndividualEnrollment/ns/a"), of("IndividualEnrollment/ns/a"));
        assert_ne!(of("IndividualEnrollment/ns/a"), of("IndividualEnrollment/ns/b"));
        assert_ne!(of("IndividualEnrollment/ns/a"), of("EnrollmentGroup/ns/a"));
    }
}
