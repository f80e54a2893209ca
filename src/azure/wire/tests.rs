//! Shape tests of the wire types against JSON as the services send it.

use serde_json::json;

use super::*;
use crate::azure::secret::Secret;

#[test]
fn individual_enrollment_serialises_camel_case_without_nones() {
    let enrollment = IndividualEnrollment {
        registration_id: "dev-1".into(),
        device_id: Some("dev-1".into()),
        attestation: AttestationMechanism::symmetric_key(Some(Secret::new("cHJpbWFyeQ==")), None),
        provisioning_status: Some(ProvisioningStatus::Disabled),
        reprovision_policy: Some(ReprovisionPolicy::default()),
        allocation_policy: Some(AllocationPolicy::GeoLatency),
        iot_hubs: Some(vec!["hub1.example.net".into()]),
        capabilities: Some(DeviceCapabilities { iot_edge: true }),
        initial_twin: Some(InitialTwin {
            tags: Some(json!({"site": "a"})),
            properties: Some(InitialTwinProperties { desired: Some(json!({"x": 1})) }),
        }),
        ..IndividualEnrollment::default()
    };
    let value = serde_json::to_value(&enrollment).expect("serialises");
    assert_eq!(
        value,
        json!({
            "registrationId": "dev-1",
            "deviceId": "dev-1",
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "cHJpbWFyeQ=="}},
            "provisioningStatus": "disabled",
            "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true},
            "allocationPolicy": "geoLatency",
            "iotHubs": ["hub1.example.net"],
            "capabilities": {"iotEdge": true},
            "initialTwin": {"tags": {"site": "a"}, "properties": {"desired": {"x": 1}}}
        })
    );
    let shown = format!("{enrollment:?}");
    assert!(!shown.contains("cHJpbWFyeQ=="), "{shown}");
}

#[test]
fn enrollment_from_service_tolerates_and_keeps_unknown_fields() {
    let value = json!({
        "registrationId": "dev-2",
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"info": {
            "subjectName": "CN=dev-2", "sha1Thumbprint": "AB", "sha256Thumbprint": "CD", "issuerName": "CN=ca",
            "notBeforeUtc": "2025-01-01T00:00:00Z", "notAfterUtc": "2026-01-01T00:00:00Z",
            "serialNumber": "01", "version": 3}}}}},
        "registrationState": {"registrationId": "dev-2", "status": "assigned", "assignedHub": "h", "deviceId": "dev-2",
                              "somethingNew": true},
        "etag": "\"abc\"",
        "provisioningStatus": "enabled",
        "createdDateTimeUtc": "2025-01-01T00:00:00Z",
        "newerApiField": {"a": 1}
    });
    let enrollment: IndividualEnrollment = serde_json::from_value(value).expect("parses");
    assert_eq!(enrollment.attestation.kind, AttestationType::X509);
    let info = enrollment
        .attestation
        .x509
        .as_ref()
        .and_then(|x| x.client_certificates.as_ref())
        .and_then(|c| c.primary.as_ref())
        .and_then(|p| p.info.as_ref())
        .expect("info");
    assert_eq!(info.version, Some(3));
    assert_eq!(enrollment.registration_state.as_ref().and_then(|s| s.status), Some(RegistrationStatus::Assigned));
    assert_eq!(enrollment.extra.get("newerApiField"), Some(&json!({"a": 1})));
    let back = serde_json::to_value(&enrollment).expect("serialises");
    assert_eq!(back["newerApiField"], json!({"a": 1}));
}

#[test]
fn enrollment_group_and_attestation_variants() {
    let group = EnrollmentGroup {
        enrollment_group_id: "g1".into(),
        attestation: AttestationMechanism::x509_ca_reference("my-ca", None),
        ..EnrollmentGroup::default()
    };
    assert_eq!(
        serde_json::to_value(&group).expect("serialises"),
        json!({"enrollmentGroupId": "g1", "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "my-ca"}}}})
    );
    let signing = AttestationMechanism::x509_signing_certificate("PEM", Some("PEM2".into()));
    assert_eq!(
        serde_json::to_value(&signing).expect("serialises"),
        json!({"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "PEM"},
                                                                 "secondary": {"certificate": "PEM2"}}}})
    );
    let tpm = AttestationMechanism::tpm("ek", None);
    assert_eq!(
        serde_json::to_value(&tpm).expect("serialises"),
        json!({"type": "tpm", "tpm": {"endorsementKey": "ek"}})
    );
    let none: AttestationMechanism = serde_json::from_value(json!({"type": "none"})).expect("parses");
    assert_eq!(none, AttestationMechanism::default());
}

#[test]
fn bulk_shapes() {
    let op = BulkEnrollmentGroupOperation { enrollment_groups: vec![], mode: BulkOperationMode::UpdateIfMatchETag };
    assert_eq!(
        serde_json::to_value(&op).expect("serialises"),
        json!({"enrollmentGroups": [], "mode": "updateIfMatchETag"})
    );
    let result: BulkEnrollmentOperationResult = serde_json::from_value(json!({
        "isSuccessful": false,
        "errors": [{"registrationId": "a", "errorCode": 409201, "errorStatus": "exists"}]
    }))
    .expect("parses");
    assert_eq!(result.errors[0].id(), Some("a"));
    let ok: BulkEnrollmentOperationResult = serde_json::from_value(json!({"isSuccessful": true})).expect("parses");
    assert!(ok.errors.is_empty());
}

#[test]
fn hub_device_and_bulk_shapes() {
    let device: Device = serde_json::from_value(json!({
        "deviceId": "d1", "generationId": "g", "etag": "MQ==", "connectionState": "Disconnected",
        "status": "enabled", "statusReason": null, "cloudToDeviceMessageCount": 0,
        "authentication": {"symmetricKey": {"primaryKey": "a2V5MQ==", "secondaryKey": "a2V5Mg=="},
                           "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null}, "type": "sas"},
        "capabilities": {"iotEdge": false}, "parentScopes": []
    }))
    .expect("parses");
    assert_eq!(device.status, Some(DeviceStatus::Enabled));
    assert!(!format!("{device:?}").contains("a2V5MQ=="));
    let item = ExportImportDevice {
        e_tag: Some("MQ==".into()),
        status: Some(DeviceStatus::Disabled),
        status_reason: Some("revoked".into()),
        ..ExportImportDevice::new("d1", ImportMode::UpdateIfMatchETag)
    };
    assert_eq!(
        serde_json::to_value(&item).expect("serialises"),
        json!({"id": "d1", "eTag": "MQ==", "importMode": "updateIfMatchETag", "status": "disabled", "statusReason": "revoked"})
    );
    let delete = ExportImportDevice::new("d2", ImportMode::DeleteIfMatchETag);
    assert_eq!(serde_json::to_value(&delete).expect("serialises")["importMode"], "deleteIfMatchETag");
    let result: BulkRegistryOperationResult = serde_json::from_value(json!({
        "isSuccessful": false,
        "errors": [{"deviceId": "d1", "errorCode": "DeviceNotFound", "errorStatus": "gone", "operation": "delete"},
                   {"deviceId": "d2", "errorCode": 412001}],
        "warnings": []
    }))
    .expect("parses");
    assert_eq!(result.errors[0].error_code.to_string(), "DeviceNotFound");
    assert_eq!(result.errors[1].error_code, ErrorCodeValue::Number(412001));
}

#[test]
fn registration_state_tolerates_unknown_status() {
    let state: DeviceRegistrationState =
        serde_json::from_value(json!({"registrationId": "r", "status": "somethingElse", "errorCode": 1}))
            .expect("parses");
    assert_eq!(state.status, Some(RegistrationStatus::Unknown));
    assert_eq!(serde_json::to_value(QuerySpecification::new("SELECT *")).expect("ok"), json!({"query": "SELECT *"}));
}
