//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated with kube's client-side CEL: the 1.20 test
//! apiserver ignores them, so this is where they are proven to parse and to accept and refuse what they should.

use dps_operator::api::common::{CertificatePair, CertificateSource};
use dps_operator::api::common::{ProvisioningServiceRef, SymmetricKeyAttestation};
use dps_operator::api::device_deprovision::{DeviceDeprovision, DeviceDeprovisionSpec};
use dps_operator::api::enrollment_group::{EnrollmentGroup, EnrollmentGroupSpec, GroupAttestation};
use dps_operator::api::individual_enrollment::{
    IndividualAttestation, IndividualEnrollment, IndividualEnrollmentSpec, IndividualX509Attestation,
};
use kube::core::cel::{validate_cel, validate_cel_update};

fn dps() -> ProvisioningServiceRef {
    ProvisioningServiceRef { name: "dps".into() }
}

fn key_attestation() -> SymmetricKeyAttestation {
    SymmetricKeyAttestation { secret_name: "keys".into(), generate: false }
}

fn enrollment(registration_id: Option<&str>, x509: bool) -> IndividualEnrollment {
    let attestation = if x509 {
        IndividualAttestation::X509(IndividualX509Attestation {
            client_certificates: CertificatePair { primary: CertificateSource::Pem("cert".into()), secondary: None },
        })
    } else {
        IndividualAttestation::SymmetricKey(key_attestation())
    };
    IndividualEnrollment::new(
        "device",
        IndividualEnrollmentSpec {
            provisioning_service_ref: dps(),
            registration_id: registration_id.map(String::from),
            device_id: None,
            provisioning_status: Default::default(),
            attestation,
            settings: Default::default(),
            on_delete: Default::default(),
        },
    )
}

fn messages(result: Result<(), kube::core::cel::ValidationErrors>) -> Vec<String> {
    result.err().map(|e| e.into_vec().into_iter().map(|e| e.message).collect()).unwrap_or_default()
}

#[test]
fn registration_id_is_immutable() {
    let old = enrollment(Some("device-1"), false);
    assert!(messages(validate_cel_update(&old, &old)).is_empty());
    let changed = messages(validate_cel_update(&enrollment(Some("device-2"), false), &old));
    assert!(changed.iter().any(|m| m.contains("registrationId is immutable")), "{changed:?}");
}

#[test]
fn registration_id_cannot_be_added_or_removed_after_creation() {
    let with_id = enrollment(Some("device"), false);
    let without_id = enrollment(None, false);
    let removed = messages(validate_cel_update(&without_id, &with_id));
    assert!(removed.iter().any(|m| m.contains("cannot be added or removed")), "{removed:?}");
    let added = messages(validate_cel_update(&with_id, &without_id));
    assert!(added.iter().any(|m| m.contains("cannot be added or removed")), "{added:?}");
}

#[test]
fn x509_registration_id_is_at_most_64_characters() {
    assert!(messages(validate_cel(&enrollment(Some(&"a".repeat(64)), true))).is_empty());
    let long = messages(validate_cel(&enrollment(Some(&"a".repeat(65)), true)));
    assert!(long.iter().any(|m| m.contains("at most 64")), "{long:?}");
    assert!(messages(validate_cel(&enrollment(Some(&"a".repeat(65)), false))).is_empty(), "only X.509 is limited");
}

#[test]
fn enrollment_group_id_is_immutable() {
    let group = |id: &str| {
        EnrollmentGroup::new(
            "group",
            EnrollmentGroupSpec {
                provisioning_service_ref: dps(),
                enrollment_group_id: Some(id.into()),
                provisioning_status: Default::default(),
                attestation: GroupAttestation::SymmetricKey(key_attestation()),
                settings: Default::default(),
                on_delete: Default::default(),
            },
        )
    };
    assert!(messages(validate_cel_update(&group("g1"), &group("g1"))).is_empty());
    let changed = messages(validate_cel_update(&group("g2"), &group("g1")));
    assert!(changed.iter().any(|m| m.contains("enrollmentGroupId is immutable")), "{changed:?}");
}

#[test]
fn deprovision_registration_id_is_immutable() {
    let deprovision = |id: &str| {
        DeviceDeprovision::new(
            "stolen",
            DeviceDeprovisionSpec {
                provisioning_service_ref: dps(),
                registration_id: id.into(),
                enrollment_group_ref: None,
                leaf_certificate: None,
                device: Default::default(),
                reason: None,
                on_delete: Default::default(),
            },
        )
    };
    assert!(messages(validate_cel_update(&deprovision("d1"), &deprovision("d1"))).is_empty());
    let changed = messages(validate_cel_update(&deprovision("d2"), &deprovision("d1")));
    assert!(changed.iter().any(|m| m.contains("registrationId is immutable")), "{changed:?}");
}
