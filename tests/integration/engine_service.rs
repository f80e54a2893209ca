//! The engine's DPS service API through our own client, over HTTPS: the client the operator uses.

use std::net::IpAddr;

use dps_operator::azure::error::AzureError;
use dps_operator::azure::wire::{
    AttestationMechanism, BulkOperationMode, EnrollmentGroup, IndividualEnrollment, ProvisioningStatus,
};

use crate::support::certs::TestCa;
use crate::support::engine::Engine;
use crate::support::raw::bulk_request_sizes;

fn symmetric_key_enrollment(registration_id: &str) -> IndividualEnrollment {
    IndividualEnrollment {
        registration_id: registration_id.into(),
        attestation: AttestationMechanism::symmetric_key(None, None),
        ..IndividualEnrollment::default()
    }
}

#[tokio::test]
async fn engine_json_names_ip_hosts_its_ca_and_owner_policies() {
    let engine = Engine::start();
    let info = &engine.info;
    assert!(info.provisioning_service.host_name.parse::<IpAddr>().is_ok(), "DPS host is not an IP address");
    assert_eq!(info.provisioning_service.connection_string.policy.as_deref(), Some("provisioningserviceowner"));
    assert!(info.hubs.len() >= 2, "the engine links at least two hubs");
    for hub in &info.hubs {
        assert!(hub.host_name.parse::<IpAddr>().is_ok(), "hub host {} is not an IP address", hub.host_name);
        assert_eq!(hub.connection_string.policy.as_deref(), Some("iothubowner"));
        assert_eq!(hub.connection_string.host_name, hub.host_name);
    }
    assert!(!engine.ca_pem().is_empty());
    assert!(!info.id_scope.is_empty());
}

#[tokio::test]
async fn individual_enrollment_create_update_delete_honours_etags() {
    let engine = Engine::start();
    let dps = engine.dps();
    let created = dps.create_enrollment(&symmetric_key_enrollment("device-etag-1")).await.expect("created");
    let etag = created.etag.clone().expect("the service returns an etag");
    assert!(created.created_date_time_utc.is_some());

    let again = dps.create_enrollment(&symmetric_key_enrollment("device-etag-1")).await;
    assert!(matches!(again, Err(AzureError::Conflict(_))), "create over existing: {again:?}");

    let mut disabled = dps.get_enrollment("device-etag-1").await.expect("read back");
    let stored_keys = disabled.attestation.symmetric_key.as_ref().and_then(|k| k.primary_key.as_ref());
    assert!(stored_keys.is_none(), "GET must not return symmetric keys");
    disabled.provisioning_status = Some(ProvisioningStatus::Disabled);
    let stale = dps.update_enrollment(&disabled, Some("\"not-the-etag\"")).await;
    assert!(matches!(stale, Err(AzureError::PreconditionFailed(_))), "stale etag: {stale:?}");
    let updated = dps.update_enrollment(&disabled, Some(&etag)).await.expect("update with the current etag");
    assert_eq!(updated.provisioning_status, Some(ProvisioningStatus::Disabled));
    assert_ne!(updated.etag.as_deref(), Some(etag.as_str()), "an update changes the etag");

    dps.delete_enrollment("device-etag-1", None).await.expect("deleted");
    dps.delete_enrollment("device-etag-1", None).await.expect("deleting again is success (404)");
    let gone = dps.get_enrollment("device-etag-1").await;
    assert!(matches!(gone, Err(AzureError::NotFound(_))), "after delete: {gone:?}");
}

#[tokio::test]
async fn service_generated_symmetric_keys_come_only_from_attestationmechanism() {
    let engine = Engine::start();
    let dps = engine.dps();
    dps.create_enrollment(&symmetric_key_enrollment("device-keys-1")).await.expect("created");
    let read = dps.get_enrollment("device-keys-1").await.expect("read back");
    let read_keys = read.attestation.symmetric_key.as_ref();
    assert!(
        read_keys.is_none_or(|k| k.primary_key.is_none() && k.secondary_key.is_none()),
        "GET must leave the generated keys out"
    );
    let mechanism = dps.enrollment_attestation("device-keys-1").await.expect("attestation mechanism");
    let keys = mechanism.symmetric_key.expect("symmetric key attestation");
    for key in [keys.primary_key.expect("primary"), keys.secondary_key.expect("secondary")] {
        let bytes = base64_len(key.expose());
        assert_eq!(bytes, 64, "generated keys are 64 random bytes");
    }
}

fn base64_len(text: &str) -> usize {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("key is base64").len()
}

#[tokio::test]
async fn x509_enrollment_gets_certificate_info_from_the_service() {
    let engine = Engine::start();
    let ca = TestCa::root("Test Root CA");
    let leaf = ca.leaf("sensor-x509-1");
    let enrollment = IndividualEnrollment {
        registration_id: "sensor-x509-1".into(),
        attestation: AttestationMechanism::x509_client_certificate(leaf.cert_pem.clone(), None),
        ..IndividualEnrollment::default()
    };
    let created = engine.dps().create_enrollment(&enrollment).await.expect("created");
    let info = created
        .attestation
        .x509
        .and_then(|x| x.client_certificates)
        .and_then(|c| c.primary)
        .and_then(|p| p.info)
        .expect("info is filled in");
    assert!(info.subject_name.unwrap_or_default().contains("sensor-x509-1"));
    assert!(info.issuer_name.unwrap_or_default().contains("Test Root CA"));
    assert_eq!(info.sha256_thumbprint.map(|t| t.len()), Some(64));
}

#[tokio::test]
async fn enrollment_query_pages_with_continuation_and_bulk_goes_ten_at_a_time() {
    let engine = Engine::start();
    let dps = engine.dps();
    let many: Vec<_> = (0..25).map(|i| symmetric_key_enrollment(&format!("bulk-device-{i:02}"))).collect();
    let result = dps.bulk_enrollments_chunked(BulkOperationMode::Create, &many).await.expect("bulk create");
    assert!(result.is_successful, "bulk create failed: {result:?}");
    let host = engine.info.provisioning_service.host_name.clone();
    let sizes = bulk_request_sizes(&engine, &host, "/enrollments").await;
    assert_eq!(sizes, [10, 10, 5], "25 entries go to DPS ten at a time");

    let first = dps.query_enrollments("SELECT *", Some(10), None).await.expect("first page");
    assert_eq!(first.items.len(), 10);
    assert!(first.continuation.is_some(), "a continuation token follows a full page");
    let all = dps.query_all_enrollments("SELECT *", Some(10)).await.expect("all pages");
    let mut ids: Vec<_> = all.into_iter().map(|e| e.registration_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25, "every enrollment exactly once across pages");

    let groups = dps.bulk_enrollment_groups_chunked(BulkOperationMode::Create, &[]).await;
    assert!(groups.is_ok(), "an empty bulk is a no-op: {groups:?}");
    assert!(bulk_request_sizes(&engine, &host, "/enrollmentGroups").await.is_empty(), "an empty bulk sends nothing");
    // Groups go in chunks too: twelve take two calls, and the engine refuses more than ten in one.
    let groups: Vec<_> = (0..12)
        .map(|i| EnrollmentGroup {
            enrollment_group_id: format!("bulk-group-{i:02}"),
            attestation: AttestationMechanism::symmetric_key(None, None),
            ..EnrollmentGroup::default()
        })
        .collect();
    let result = dps.bulk_enrollment_groups_chunked(BulkOperationMode::Create, &groups).await.expect("bulk groups");
    assert!(result.is_successful, "bulk group create failed: {result:?}");
    let stored = dps.query_all_enrollment_groups("SELECT *", None).await.expect("query groups");
    assert_eq!(stored.len(), 12, "every group of both chunks reached the engine");
    assert_eq!(bulk_request_sizes(&engine, &host, "/enrollmentGroups").await, [10, 2]);
}

#[tokio::test]
async fn enrollment_groups_have_the_same_lifecycle() {
    let engine = Engine::start();
    let dps = engine.dps();
    let group = EnrollmentGroup {
        enrollment_group_id: "vending".into(),
        attestation: AttestationMechanism::symmetric_key(None, None),
        ..EnrollmentGroup::default()
    };
    let created = dps.create_enrollment_group(&group).await.expect("created");
    let again = dps.create_enrollment_group(&group).await;
    assert!(matches!(again, Err(AzureError::Conflict(_))), "create over existing: {again:?}");
    let mut disabled = created.clone();
    disabled.provisioning_status = Some(ProvisioningStatus::Disabled);
    let updated = dps.update_enrollment_group(&disabled, created.etag.as_deref()).await.expect("updated");
    assert_eq!(updated.provisioning_status, Some(ProvisioningStatus::Disabled));
    let groups = dps.query_all_enrollment_groups("SELECT *", None).await.expect("query");
    assert_eq!(groups.len(), 1);
    let states = dps.query_all_registration_states("vending", None).await.expect("registrations of the group");
    assert!(states.is_empty());
    dps.delete_enrollment_group("vending", None).await.expect("deleted");
    let gone = dps.get_enrollment_group("vending").await;
    assert!(matches!(gone, Err(AzureError::NotFound(_))));
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut engine = Engine::start();
    let dps = engine.dps();
    for i in 0..40 {
        dps.create_enrollment(&symmetric_key_enrollment(&format!("durable-{i:02}"))).await.expect("acknowledged");
    }
    engine.kill_and_restart();
    let dps = engine.dps();
    let all = dps.query_all_enrollments("SELECT *", Some(100)).await.expect("query after restart");
    assert_eq!(all.len(), 40, "every acknowledged write is there after kill -9");
    let keys = dps.enrollment_attestation("durable-07").await.expect("keys survive").symmetric_key;
    assert!(keys.and_then(|k| k.primary_key).is_some());
}

#[tokio::test]
async fn engine_data_and_engine_json_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let engine = Engine::start();
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&engine.data_dir), 0o700, "the data directory holds every key");
    assert_eq!(mode(&engine.engine_json()), 0o600, "engine.json holds the owner connection strings");
}

#[tokio::test]
async fn ids_ending_in_a_dash_or_starting_with_a_special_character_are_managed_and_register() {
    let engine = Engine::start();
    let dps = engine.dps();
    for id in ["sensor-", ".sensor", "_sensor", ":sensor", "-sensor"] {
        let created = dps.create_enrollment(&symmetric_key_enrollment(id)).await;
        assert!(created.is_ok(), "DPS accepts registration ID '{id}', the engine refused it: {created:?}");
        dps.get_enrollment(id).await.unwrap_or_else(|e| panic!("'{id}' reads back: {e}"));
    }
    let group = EnrollmentGroup {
        enrollment_group_id: "-fleet-".into(),
        attestation: AttestationMechanism::symmetric_key(None, None),
        ..EnrollmentGroup::default()
    };
    dps.create_enrollment_group(&group).await.expect("DPS accepts group ID '-fleet-'");
    let keys = dps.enrollment_attestation("sensor-").await.expect("keys").symmetric_key.expect("symmetric key");
    let key = keys.primary_key.expect("primary key").expose().to_string();
    crate::support::device::register(&engine, "sensor-", crate::support::device::with_key(&key)).await.hub();
    for bad in ["sensor.", "sensor_", "sensor:"] {
        let refused = dps.create_enrollment(&symmetric_key_enrollment(bad)).await;
        assert!(matches!(refused, Err(AzureError::Invalid(_))), "'{bad}' ends in . _ or : : {refused:?}");
    }
}
