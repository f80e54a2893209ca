//! Rules the schema cannot enforce on Kubernetes before 1.25 (the CRDs' CEL rules), checked by the
//! controller with the same meaning: Azure's registration ID rule and immutable IDs.

use crate::api::common::{ProvisioningStatus, REGISTRATION_ID_MAX_LEN, X509_REGISTRATION_ID_MAX_LEN};
use crate::{Error, Result};

/// Azure's registration and group ID rule: at most `max` characters of ASCII alphanumerics and `- . _ :`,
/// the last one alphanumeric or `-`.
pub fn check_id(what: &str, id: &str, max: usize) -> Result<()> {
    let valid_chars = id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    let last_ok = id.chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
    if id.is_empty() || id.len() > max || !valid_chars || !last_ok {
        return Err(Error::invalid(
            "InvalidRegistrationId",
            format!(
                "{what} {id:?} is not valid: at most {max} characters of letters, digits and - . _ :, ending with a letter, digit or -"
            ),
        ));
    }
    Ok(())
}

/// The longest registration ID an individual enrollment may have. With X.509 attestation the ID is the
/// device certificate's CN, at most 64 characters, but only an enabled entry needs a device to present that
/// certificate: a disabled one is held to DPS's general limit, so an entry created before the X.509 limit
/// was enforced can always be disabled (a revocation step). The CRD's CEL rule has the same exemption.
pub fn registration_id_max_len(x509: bool, status: ProvisioningStatus) -> usize {
    if x509 && status == ProvisioningStatus::Enabled { X509_REGISTRATION_ID_MAX_LEN } else { REGISTRATION_ID_MAX_LEN }
}

/// An ID may not change once the resource has acted on it (status records the bound one).
pub fn check_immutable(what: &str, bound: Option<&str>, wanted: &str) -> Result<()> {
    match bound {
        Some(bound) if !bound.eq_ignore_ascii_case(wanted) => Err(Error::invalid(
            "ImmutableFieldChanged",
            format!(
                "{what} is immutable: the resource is bound to {bound:?}; set it back or create a new resource for {wanted:?}"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_accepts_ids_that_start_with_a_special_character_or_end_with_a_dash() {
        for id in ["a-", "-a", ".a", "_a", ":a", "dev-1", "a:b.c_d"] {
            assert!(check_id("registration ID", id, 128).is_ok(), "{id}");
        }
        for id in ["", "a.", "a_", "a:", "a b", "ä", &"a".repeat(129)] {
            assert!(check_id("registration ID", id, 128).is_err(), "{id}");
        }
        assert!(check_id("registration ID", &"a".repeat(65), 64).is_err());
    }

    #[test]
    fn a_disabled_x509_enrollment_is_not_held_to_the_certificate_cn_limit() {
        let long = "a".repeat(70);
        let enabled = registration_id_max_len(true, ProvisioningStatus::Enabled);
        assert!(check_id("registrationId", &long, enabled).is_err());
        let disabled = registration_id_max_len(true, ProvisioningStatus::Disabled);
        assert!(check_id("registrationId", &long, disabled).is_ok());
        assert_eq!(registration_id_max_len(false, ProvisioningStatus::Enabled), 128);
    }

    #[test]
    fn a_changed_id_is_refused_case_insensitively() {
        assert!(check_immutable("registrationId", Some("Dev-1"), "dev-1").is_ok());
        assert!(check_immutable("registrationId", None, "dev-1").is_ok());
        assert!(check_immutable("registrationId", Some("dev-1"), "dev-2").is_err());
    }
}
