//! Device registration through the engine: DPS's decision order (the seeds' revocation cases), allocation,
//! hub identities, reprovisioning, and refused attempts.

use dps_operator::azure::wire::{
    AllocationPolicy, AttestationMechanism, EnrollmentGroup, IndividualEnrollment, ProvisioningStatus,
    ReprovisionPolicy,
};
use dps_operator::azure::{secret::Secret, wire::DeviceStatus};
use serde_json::Value;

use crate::support::certs::TestCa;
use crate::support::device::{register, with_certificate, with_group_key, with_key};
use crate::support::engine::Engine;
use crate::support::raw::{dps_token, dps_url, https_client};

const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
const KEY_C: &str = "Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M=";

fn key_enrollment(id: &str, key: &str) -> IndividualEnrollment {
    IndividualEnrollment {
        registration_id: id.into(),
        attestation: AttestationMechanism::symmetric_key(
            Some(Secret::new(key.to_string())),
            Some(Secret::new(KEY_B.to_string())),
        ),
        ..IndividualEnrollment::default()
    }
}

fn x509_group(id: &str, ca: &TestCa, status: ProvisioningStatus) -> EnrollmentGroup {
    EnrollmentGroup {
        enrollment_group_id: id.into(),
        attestation: AttestationMechanism::x509_signing_certificate(ca.cert_pem(), None),
        provisioning_status: Some(status),
        ..EnrollmentGroup::default()
    }
}

#[tokio::test]
async fn symmetric_key_device_registers_and_gets_an_enabled_identity_in_its_hub() {
    let engine = Engine::start();
    engine.dps().create_enrollment(&key_enrollment("thermostat-1", KEY_A)).await.expect("enrolled");
    let registration = register(&engine, "thermostat-1", with_key(KEY_A)).await;
    let hub_host = registration.hub().to_string();
    let index = engine.info.hubs.iter().position(|h| h.host_name == hub_host).expect("assigned to a linked hub");
    let device = engine.hub(index).get_device("thermostat-1").await.expect("device identity exists in its hub");
    assert_eq!(device.status, Some(DeviceStatus::Enabled));
    let state = engine.dps().get_registration_state("thermostat-1").await.expect("registration state recorded");
    assert_eq!(state.assigned_hub.as_deref(), Some(hub_host.as_str()));
}

#[tokio::test]
async fn wrong_symmetric_key_is_refused_at_register_and_the_secondary_key_works() {
    let engine = Engine::start();
    engine.dps().create_enrollment(&key_enrollment("thermostat-2", KEY_A)).await.expect("enrolled");
    // KEY_B is the entry's secondary key, which is as good as the primary.
    register(&engine, "thermostat-2", with_key(KEY_B)).await.hub();
    let registration = register(&engine, "thermostat-2", with_key(KEY_C)).await;
    assert!(
        registration.refused_at_register(),
        "a device with the wrong key was not refused at register: {registration:?}"
    );
}

#[tokio::test]
async fn group_key_device_registers_with_its_derived_key() {
    let engine = Engine::start();
    let group = EnrollmentGroup {
        enrollment_group_id: "vending".into(),
        attestation: AttestationMechanism::symmetric_key(
            Some(Secret::new(KEY_A.to_string())),
            Some(Secret::new(KEY_B.to_string())),
        ),
        ..EnrollmentGroup::default()
    };
    engine.dps().create_enrollment_group(&group).await.expect("group enrolled");
    register(&engine, "vending-0001", with_group_key(KEY_A)).await.hub();
    let states = engine.dps().query_all_registration_states("vending", None).await.expect("group registrations");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].registration_id.as_deref(), Some("vending-0001"));
}

#[tokio::test]
async fn disabled_individual_enrollment_blocks_group_device() {
    let engine = Engine::start();
    let dps = engine.dps();
    let root = TestCa::root("Fleet Root");
    let intermediate = root.intermediate("Fleet Intermediate");
    dps.create_enrollment_group(&x509_group("fleet", &intermediate, ProvisioningStatus::Enabled)).await.expect("group");
    let stolen = intermediate.leaf("sensor-0977");
    let neighbour = intermediate.leaf("sensor-0978");
    register(&engine, "sensor-0977", with_certificate(&stolen)).await.hub();

    // The seed's procedure without the device certificate: a disabled symmetric-key entry with throw-away keys.
    let mut blocker = key_enrollment("sensor-0977", KEY_B);
    blocker.provisioning_status = Some(ProvisioningStatus::Disabled);
    dps.create_enrollment(&blocker).await.expect("blocking entry");

    let blocked = register(&engine, "sensor-0977", with_certificate(&stolen)).await;
    assert!(blocked.disabled(), "the disabled individual entry did not block the device: {blocked:?}");
    register(&engine, "sensor-0978", with_certificate(&neighbour)).await.hub();

    // Deleting the disabled entry lets the device back in through its group (which is why it must stay).
    dps.delete_enrollment("sensor-0977", None).await.expect("blocker deleted");
    register(&engine, "sensor-0977", with_certificate(&stolen)).await.hub();
}

#[tokio::test]
async fn disabled_x509_individual_enrollment_with_the_leaf_certificate_blocks_the_device() {
    let engine = Engine::start();
    let dps = engine.dps();
    let root = TestCa::root("Root");
    dps.create_enrollment_group(&x509_group("all", &root, ProvisioningStatus::Enabled)).await.expect("group");
    let leaf = root.leaf("camera-12");
    let blocker = IndividualEnrollment {
        registration_id: "camera-12".into(),
        attestation: AttestationMechanism::x509_client_certificate(leaf.cert_pem.clone(), None),
        provisioning_status: Some(ProvisioningStatus::Disabled),
        ..IndividualEnrollment::default()
    };
    dps.create_enrollment(&blocker).await.expect("blocking entry");
    let blocked = register(&engine, "camera-12", with_certificate(&leaf)).await;
    assert!(blocked.disabled(), "{blocked:?}");
}

#[tokio::test]
async fn disabled_intermediate_group_blocks_even_when_the_root_group_is_enabled() {
    let engine = Engine::start();
    let dps = engine.dps();
    let root = TestCa::root("Root CA");
    let intermediate = root.intermediate("Compromised Intermediate");
    let other = root.intermediate("Healthy Intermediate");
    dps.create_enrollment_group(&x509_group("root", &root, ProvisioningStatus::Enabled)).await.expect("root group");
    dps.create_enrollment_group(&x509_group("compromised", &intermediate, ProvisioningStatus::Disabled))
        .await
        .expect("intermediate group");
    let blocked = register(&engine, "meter-1", with_certificate(&intermediate.leaf("meter-1"))).await;
    assert!(blocked.disabled(), "the nearest (disabled) group did not decide: {blocked:?}");
    // A device under another intermediate is admitted by the root group.
    register(&engine, "meter-2", with_certificate(&other.leaf("meter-2"))).await.hub();
}

#[tokio::test]
async fn device_with_no_matching_entry_is_refused_at_register() {
    let engine = Engine::start();
    let stranger = TestCa::root("Unknown CA").leaf("stranger-1");
    assert!(register(&engine, "stranger-1", with_certificate(&stranger)).await.refused_at_register());
    assert!(register(&engine, "stranger-2", with_key(KEY_A)).await.refused_at_register());
}

#[tokio::test]
async fn leaf_whose_common_name_differs_from_the_registration_id_is_refused_at_register() {
    let engine = Engine::start();
    let root = TestCa::root("Root");
    engine.dps().create_enrollment_group(&x509_group("all", &root, ProvisioningStatus::Enabled)).await.expect("group");
    let leaf = root.leaf("real-name");
    assert!(register(&engine, "other-name", with_certificate(&leaf)).await.refused_at_register());
}

#[tokio::test]
async fn static_allocation_assigns_the_one_listed_hub() {
    let engine = Engine::start();
    let second = engine.info.hubs[1].host_name.clone();
    let mut enrollment = key_enrollment("static-1", KEY_A);
    enrollment.allocation_policy = Some(AllocationPolicy::Static);
    enrollment.iot_hubs = Some(vec![second.clone()]);
    engine.dps().create_enrollment(&enrollment).await.expect("enrolled");
    assert_eq!(register(&engine, "static-1", with_key(KEY_A)).await.hub(), second);
}

#[tokio::test]
async fn hashed_allocation_uses_more_than_one_hub_and_is_stable() {
    let engine = Engine::start();
    let group = EnrollmentGroup {
        enrollment_group_id: "spread".into(),
        attestation: AttestationMechanism::symmetric_key(
            Some(Secret::new(KEY_A.to_string())),
            Some(Secret::new(KEY_B.to_string())),
        ),
        allocation_policy: Some(AllocationPolicy::Hashed),
        ..EnrollmentGroup::default()
    };
    engine.dps().create_enrollment_group(&group).await.expect("group");
    let mut hubs = std::collections::BTreeSet::new();
    for i in 0..12 {
        let id = format!("spread-{i}");
        let first = register(&engine, &id, with_group_key(KEY_A)).await.hub().to_string();
        let again = register(&engine, &id, with_group_key(KEY_A)).await.hub().to_string();
        assert_eq!(first, again, "hashed allocation moved {id}");
        hubs.insert(first);
    }
    assert!(hubs.len() > 1, "12 devices all hashed to one hub: {hubs:?}");
}

#[tokio::test]
async fn reprovisioning_without_hub_update_keeps_the_first_hub() {
    let engine = Engine::start();
    let dps = engine.dps();
    let hub_1 = engine.info.hubs[0].host_name.clone();
    let hub_2 = engine.info.hubs[1].host_name.clone();
    let mut enrollment = key_enrollment("sticky-1", KEY_A);
    enrollment.allocation_policy = Some(AllocationPolicy::Static);
    enrollment.iot_hubs = Some(vec![hub_1.clone()]);
    enrollment.reprovision_policy =
        Some(ReprovisionPolicy { update_hub_assignment: false, migrate_device_data: false });
    let created = dps.create_enrollment(&enrollment).await.expect("enrolled");
    assert_eq!(register(&engine, "sticky-1", with_key(KEY_A)).await.hub(), hub_1);

    let mut moved = dps.get_enrollment("sticky-1").await.expect("read");
    moved.iot_hubs = Some(vec![hub_2.clone()]);
    moved.attestation = enrollment.attestation.clone();
    dps.update_enrollment(&moved, created.etag.as_deref()).await.expect("moved to hub 2");
    assert_eq!(register(&engine, "sticky-1", with_key(KEY_A)).await.hub(), hub_1, "updateHubAssignment=false");
}

#[tokio::test]
async fn refused_attempts_are_counted_per_registration_id() {
    let engine = Engine::start();
    let mut blocker = key_enrollment("knocker-1", KEY_A);
    blocker.provisioning_status = Some(ProvisioningStatus::Disabled);
    engine.dps().create_enrollment(&blocker).await.expect("disabled entry");
    for _ in 0..3 {
        assert!(register(&engine, "knocker-1", with_key(KEY_A)).await.disabled());
    }
    let http = https_client(&engine);
    let response = http
        .get(dps_url(&engine, "/engine/refusals/knocker-1"))
        .header("Authorization", dps_token(&engine))
        .send()
        .await
        .expect("answered");
    assert!(response.status().is_success(), "refusals endpoint: {}", response.status());
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["attempts"], 3, "{body}");
    assert!(body["lastReason"].as_str().is_some_and(|r| !r.is_empty()), "{body}");

    let unauthenticated = http.get(dps_url(&engine, "/engine/refusals")).send().await.expect("answered");
    assert_eq!(unauthenticated.status(), reqwest::StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn allocation_to_a_hub_that_is_not_linked_ends_failed() {
    let engine = Engine::start();
    let mut enrollment = key_enrollment("orphan-1", KEY_A);
    enrollment.allocation_policy = Some(AllocationPolicy::Static);
    enrollment.iot_hubs = Some(vec!["not-linked.azure-devices.net".into()]);
    engine.dps().create_enrollment(&enrollment).await.expect("enrolled");
    let registration = register(&engine, "orphan-1", with_key(KEY_A)).await;
    assert!(registration.failed(), "{registration:?}");
}
