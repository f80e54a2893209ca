//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated with kube's client-side CEL: the 1.20 test
//! apiserver ignores them, so this is where they are proven to parse and to accept and refuse what they should.

use dps_operator::api::common::ProvisioningStatus;
use dps_operator::api::common::{CertificatePair, CertificateSource};
use dps_operator::api::common::{ProvisioningServiceRef, SymmetricKeyAttestation};
use dps_operator::api::device_deprovision::{DeviceDeprovision, DeviceDeprovisionSpec};
use dps_operator::api::enrollment_group::{EnrollmentGroup, EnrollmentGroupSpec, GroupAttestation};
use dps_operator::api::individual_enrollment::{
    IndividualAttestation, IndividualEnrollment, IndividualEnrollmentSpec, IndividualX509Attestation,
};
use kube::CustomResourceExt;
use kube::core::cel::{Validator, validate_cel_update};
use serde_json::{Value, json};

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

fn x509_enrollment(registration_id: &str, status: ProvisioningStatus) -> IndividualEnrollment {
    let mut enrollment = enrollment(Some(registration_id), true);
    enrollment.spec.provisioning_status = status;
    enrollment
}

#[test]
fn an_x509_enrollment_created_before_the_length_rule_can_still_be_disabled() {
    let long = "a".repeat(70);
    let old = x509_enrollment(&long, ProvisioningStatus::Enabled);
    let disabled = x509_enrollment(&long, ProvisioningStatus::Disabled);
    let errors = messages(validate_cel_update(&disabled, &old));
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn an_x509_enrollment_created_before_the_length_rule_can_still_be_edited_and_its_status_written() {
    let long = "a".repeat(70);
    let old = x509_enrollment(&long, ProvisioningStatus::Enabled);
    let mut edited = old.clone();
    edited.spec.settings.iot_hubs = vec!["hub.azure-devices.net".into()];
    let errors = messages(validate_cel_update(&edited, &old));
    assert!(errors.is_empty(), "{errors:?}");
    let errors = messages(validate_cel_update(&old, &old));
    assert!(errors.is_empty(), "an unchanged spec (a status or finalizer write) passes: {errors:?}");
}

#[test]
fn changing_the_registration_id_to_one_longer_than_64_characters_under_x509_is_refused() {
    let old = x509_enrollment("device", ProvisioningStatus::Enabled);
    let changed = messages(validate_cel_update(&x509_enrollment(&"a".repeat(70), ProvisioningStatus::Enabled), &old));
    assert!(changed.iter().any(|m| m.contains("at most 64")), "{changed:?}");
    let at_limit = messages(validate_cel_update(&x509_enrollment(&"a".repeat(64), ProvisioningStatus::Enabled), &old));
    assert!(!at_limit.iter().any(|m| m.contains("at most 64")), "{at_limit:?}");
}

#[test]
fn switching_an_enabled_enrollment_with_a_long_id_to_x509_is_refused() {
    let long = "a".repeat(70);
    let old = enrollment(Some(&long), false);
    let switched = messages(validate_cel_update(&x509_enrollment(&long, ProvisioningStatus::Enabled), &old));
    assert!(switched.iter().any(|m| m.contains("at most 64")), "{switched:?}");
    let disabled = messages(validate_cel_update(&x509_enrollment(&long, ProvisioningStatus::Disabled), &old));
    assert!(disabled.is_empty(), "a Disabled entry is not held to the CN limit: {disabled:?}");
    let symmetric = messages(validate_cel_update(&enrollment(Some(&"b".repeat(70)), false), &old));
    assert!(!symmetric.iter().any(|m| m.contains("at most 64")), "only X.509 is limited: {symmetric:?}");
}

/// The CEL messages for a raw object of kind `K` (for shapes the Rust types cannot express).
fn raw_messages<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    let crd = serde_json::to_value(K::crd()).expect("CRD serialises");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    messages(Validator::new().validate(schema, object, old))
}

fn raw(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("resource serialises")
}

#[test]
fn an_enrollment_without_one_attestation_is_refused_with_a_message_naming_the_choices() {
    let mut none = raw(&enrollment(Some("device"), false));
    none["spec"]["attestation"] = json!({});
    let mut two = none.clone();
    two["spec"]["attestation"] =
        json!({"symmetricKey": {"secretName": "keys"}, "tpm": {"endorsementKey": "a".repeat(64)}});
    for object in [none, two] {
        let errors = raw_messages::<IndividualEnrollment>(&object, None);
        assert!(errors.iter().any(|m| m.contains("exactly one of symmetricKey, x509, tpm")), "{errors:?}");
    }
    assert!(raw_messages::<IndividualEnrollment>(&raw(&enrollment(Some("device"), true)), None).is_empty());
}

#[test]
fn an_enrollment_group_without_one_attestation_is_refused_with_a_message_naming_the_choices() {
    let mut group = raw(&EnrollmentGroup::new(
        "group",
        EnrollmentGroupSpec {
            provisioning_service_ref: dps(),
            enrollment_group_id: None,
            provisioning_status: Default::default(),
            attestation: GroupAttestation::SymmetricKey(key_attestation()),
            settings: Default::default(),
            on_delete: Default::default(),
        },
    ));
    assert!(raw_messages::<EnrollmentGroup>(&group, None).is_empty());
    group["spec"]["attestation"] = json!({});
    let errors = raw_messages::<EnrollmentGroup>(&group, None);
    assert!(errors.iter().any(|m| m.contains("exactly one of symmetricKey, x509")), "{errors:?}");
    group["spec"]["attestation"] = json!({"x509": {}});
    let errors = raw_messages::<EnrollmentGroup>(&group, None);
    assert!(errors.iter().any(|m| m.contains("exactly one of signingCertificates, caReferences")), "{errors:?}");
    group["spec"]["attestation"] =
        json!({"x509": {"caReferences": {"primary": "root"}, "signingCertificates": {"primary": {"pem": "cert"}}}});
    let errors = raw_messages::<EnrollmentGroup>(&group, None);
    assert!(errors.iter().any(|m| m.contains("exactly one of signingCertificates, caReferences")), "{errors:?}");
}

#[test]
fn a_certificate_source_must_name_exactly_one_source() {
    let mut object = raw(&enrollment(Some("device"), true));
    let primary = "/spec/attestation/x509/clientCertificates/primary";
    for source in [json!({}), json!({"pem": "cert", "secretRef": {"name": "s", "key": "tls.crt"}})] {
        *object.pointer_mut(primary).expect("primary certificate") = source;
        let errors = raw_messages::<IndividualEnrollment>(&object, None);
        assert!(errors.iter().any(|m| m.contains("exactly one of pem, secretRef, configMapRef")), "{errors:?}");
    }
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
