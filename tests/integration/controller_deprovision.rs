//! The DeviceDeprovision controller against the real apiserver and the engine over HTTPS: devices of
//! groups and of their own entries revoked at DPS then in their hub, siblings untouched, the block kept
//! or lifted on deletion, and the order surviving a kill between any two steps.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::{DeviceDeprovision, IndividualEnrollment};
use dps_operator::azure::secret::Secret;
use dps_operator::azure::wire::{
    AttestationMechanism, AttestationType, DeviceStatus, EnrollmentGroup, ProvisioningStatus,
};
use dps_operator::controller::failpoint::ENV as FAILPOINT;

use crate::controller_individual::event_reasons;
use crate::support::certs::TestCa;
use crate::support::device::{Registration, register, with_certificate, with_group_key, with_key};
use crate::support::operator::{Bed, SERVICE};

const GROUP_KEY: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";

fn deprovision(name: &str, registration_id: &str, extra: serde_json::Value) -> DeviceDeprovision {
    let mut spec = json!({
        "provisioningServiceRef": { "name": SERVICE },
        "registrationId": registration_id,
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "DeviceDeprovision",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("a valid DeviceDeprovision")
}

/// A symmetric-key group created directly in the engine (the EnrollmentGroup controller is not needed).
async fn key_group(bed: &Bed, id: &str) {
    let group = EnrollmentGroup {
        enrollment_group_id: id.into(),
        attestation: AttestationMechanism::symmetric_key(Some(Secret::new(GROUP_KEY.to_string())), None),
        ..EnrollmentGroup::default()
    };
    bed.engine.dps().create_enrollment_group(&group).await.expect("group enrolled");
}

async fn hub_device(bed: &Bed, hub: &str, device_id: &str) -> dps_operator::azure::wire::Device {
    let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("a known hub");
    bed.engine.hub(index).get_device(device_id).await.expect("hub device exists")
}

fn assigned(registration: Registration) -> (String, String) {
    match registration {
        Registration::Assigned { hub, device_id } => (hub, device_id),
        other => panic!("the device was refused: {other:?}"),
    }
}

async fn create(bed: &Bed, deprovision: &DeviceDeprovision) {
    bed.api::<DeviceDeprovision>().create(&PostParams::default(), deprovision).await.expect("created");
}

#[tokio::test]
async fn deprovision_of_a_symmetric_key_group_device_blocks_it_not_its_sibling_and_disables_its_hub_device_with_the_reason()
 {
    let bed = Bed::start("deprov-key").await;
    key_group(&bed, "vending").await;
    let (hub, device_id) = assigned(register(&bed.engine, "vending-0001", with_group_key(GROUP_KEY)).await);
    assigned(register(&bed.engine, "vending-0002", with_group_key(GROUP_KEY)).await);

    let order = deprovision(
        "stolen-0001",
        "vending-0001",
        json!({"reason": "stolen from site 4", "enrollmentGroupRef": {"name": "vending"}}),
    );
    create(&bed, &order).await;
    let done = bed.wait_ready::<DeviceDeprovision>("stolen-0001").await;
    let status = done.status.expect("status");
    assert_eq!(serde_json::to_value(status.phase).expect("phase"), "Completed");
    assert_eq!(status.assigned_hub.as_deref(), Some(hub.as_str()));
    assert_eq!(status.device_id.as_deref(), Some(device_id.as_str()));
    let blocking = status.blocking_entry.expect("blocking entry recorded");
    assert!(blocking.created, "a group device has no entry of its own: {blocking:?}");
    assert_eq!(blocking.attestation.as_deref(), Some("symmetricKey"));
    assert!(status.revoked_time.is_some() && status.completed_time.is_some());

    let entry = bed.engine.dps().get_enrollment("vending-0001").await.expect("blocking entry in DPS");
    assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled));
    assert_eq!(entry.attestation.kind, AttestationType::SymmetricKey);
    let refused = register(&bed.engine, "vending-0001", with_group_key(GROUP_KEY)).await;
    assert!(refused.disabled(), "the deprovisioned device was not refused: {refused:?}");
    assigned(register(&bed.engine, "vending-0002", with_group_key(GROUP_KEY)).await);

    let device = hub_device(&bed, &hub, &device_id).await;
    assert_eq!(device.status, Some(DeviceStatus::Disabled));
    assert_eq!(device.status_reason.as_deref(), Some("stolen from site 4"));

    let reasons = event_reasons(&bed, "DeviceDeprovision", "stolen-0001").await;
    let phases: Vec<&str> = reasons
        .iter()
        .map(String::as_str)
        .filter(|r| {
            ["Revoking", "EntryCreated", "Revoked", "Deregistering", "HubDeviceDisabled", "Completed"].contains(r)
        })
        .collect();
    assert_eq!(
        phases,
        ["Revoking", "EntryCreated", "Revoked", "Deregistering", "HubDeviceDisabled", "Completed"],
        "all events: {reasons:?}"
    );
    bed.ns.delete().await;
}

#[tokio::test]
async fn deprovision_of_x509_group_devices_blocks_them_with_and_without_their_leaf_certificate() {
    let bed = Bed::start("deprov-x509").await;
    let root = TestCa::root("Fleet Root");
    let intermediate = root.intermediate("Fleet Intermediate");
    let group = EnrollmentGroup {
        enrollment_group_id: "sensors".into(),
        attestation: AttestationMechanism::x509_signing_certificate(intermediate.cert_pem(), None),
        ..EnrollmentGroup::default()
    };
    bed.engine.dps().create_enrollment_group(&group).await.expect("group enrolled");
    let (with_leaf, without_leaf, sibling) =
        (intermediate.leaf("sensor-0977"), intermediate.leaf("sensor-0978"), intermediate.leaf("sensor-0979"));
    let (hub_a, device_a) = assigned(register(&bed.engine, "sensor-0977", with_certificate(&with_leaf)).await);
    let (hub_b, device_b) = assigned(register(&bed.engine, "sensor-0978", with_certificate(&without_leaf)).await);

    create(&bed, &deprovision("sensor-0977", "sensor-0977", json!({"leafCertificate": {"pem": with_leaf.cert_pem}})))
        .await;
    create(&bed, &deprovision("sensor-0978", "sensor-0978", json!({"device": "Delete"}))).await;
    let a = bed.wait_ready::<DeviceDeprovision>("sensor-0977").await.status.expect("status");
    let b = bed.wait_ready::<DeviceDeprovision>("sensor-0978").await.status.expect("status");
    assert_eq!(a.blocking_entry.and_then(|e| e.attestation).as_deref(), Some("x509"));
    assert_eq!(b.blocking_entry.and_then(|e| e.attestation).as_deref(), Some("symmetricKey"));

    let dps = bed.engine.dps();
    let entry_a = dps.get_enrollment("sensor-0977").await.expect("entry with the leaf certificate");
    assert_eq!(entry_a.attestation.kind, AttestationType::X509);
    assert_eq!(entry_a.provisioning_status, Some(ProvisioningStatus::Disabled));
    let entry_b = dps.get_enrollment("sensor-0978").await.expect("entry with throw-away keys");
    assert_eq!(entry_b.attestation.kind, AttestationType::SymmetricKey);
    assert_eq!(entry_b.provisioning_status, Some(ProvisioningStatus::Disabled));

    for (id, leaf) in [("sensor-0977", &with_leaf), ("sensor-0978", &without_leaf)] {
        let refused = register(&bed.engine, id, with_certificate(leaf)).await;
        assert!(refused.disabled(), "{id} was not refused: {refused:?}");
    }
    assigned(register(&bed.engine, "sensor-0979", with_certificate(&sibling)).await);
    assert_eq!(hub_device(&bed, &hub_a, &device_a).await.status, Some(DeviceStatus::Disabled));
    let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub_b).expect("a known hub");
    let gone = bed.engine.hub(index).get_device(&device_b).await;
    assert!(gone.is_err_and(|e| e.is_not_found()), "device action Delete deletes the hub device");
    bed.ns.delete().await;
}

#[tokio::test]
async fn deprovision_of_a_device_with_its_own_individual_enrollment_disables_the_entry_and_the_resource_shows_blocked()
{
    let bed = Bed::start("deprov-own").await;
    let enrollment: IndividualEnrollment = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": "meter-9" },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": "meter-9-keys", "generate": true } },
        }
    }))
    .expect("a valid IndividualEnrollment");
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("meter-9").await;
    let secret = bed.api::<k8s_openapi::api::core::v1::Secret>().get("meter-9-keys").await.expect("keys");
    let key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key");
    let (hub, device_id) = assigned(register(&bed.engine, "meter-9", with_key(&key)).await);

    create(&bed, &deprovision("retire-meter-9", "meter-9", json!({"reason": "retired"}))).await;
    let status = bed.wait_ready::<DeviceDeprovision>("retire-meter-9").await.status.expect("status");
    let blocking = status.blocking_entry.expect("blocking entry recorded");
    assert!(!blocking.created, "the device's own entry is the block: {blocking:?}");
    assert_eq!(blocking.attestation.as_deref(), Some("symmetricKey"));
    let entry = bed.engine.dps().get_enrollment("meter-9").await.expect("own entry kept");
    assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled));
    let refused = register(&bed.engine, "meter-9", with_key(&key)).await;
    assert!(refused.disabled(), "{refused:?}");
    assert_eq!(hub_device(&bed, &hub, &device_id).await.status_reason.as_deref(), Some("retired"));

    let blocked = bed.wait_condition::<IndividualEnrollment>("meter-9", "Blocked", "True").await;
    let condition = blocked.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Blocked");
    assert!(condition.expect("Blocked").message.contains("retire-meter-9"));
    bed.ns.delete().await;
}

#[tokio::test]
async fn deleting_a_retained_deprovision_keeps_the_blocking_entry_and_the_device_refused() {
    let bed = Bed::start("deprov-retain").await;
    key_group(&bed, "kiosks").await;
    assigned(register(&bed.engine, "kiosk-12", with_group_key(GROUP_KEY)).await);
    create(&bed, &deprovision("kiosk-12", "kiosk-12", json!({}))).await;
    bed.wait_ready::<DeviceDeprovision>("kiosk-12").await;
    bed.api::<DeviceDeprovision>().delete("kiosk-12", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<DeviceDeprovision>("kiosk-12").await;

    let entry = bed.engine.dps().get_enrollment("kiosk-12").await.expect("the block stays in DPS");
    assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled));
    let refused = register(&bed.engine, "kiosk-12", with_group_key(GROUP_KEY)).await;
    assert!(refused.disabled(), "{refused:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn deleting_a_reinstating_deprovision_lets_the_device_register_again_and_re_enables_its_hub_device() {
    let bed = Bed::start("deprov-reinstate").await;
    key_group(&bed, "kiosks").await;
    let (hub, device_id) = assigned(register(&bed.engine, "kiosk-7", with_group_key(GROUP_KEY)).await);
    create(&bed, &deprovision("kiosk-7", "kiosk-7", json!({"onDelete": "Reinstate"}))).await;
    bed.wait_ready::<DeviceDeprovision>("kiosk-7").await;
    assert_eq!(hub_device(&bed, &hub, &device_id).await.status, Some(DeviceStatus::Disabled));
    assert!(register(&bed.engine, "kiosk-7", with_group_key(GROUP_KEY)).await.disabled());

    bed.api::<DeviceDeprovision>().delete("kiosk-7", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<DeviceDeprovision>("kiosk-7").await;
    let lifted = bed.engine.dps().get_enrollment("kiosk-7").await;
    assert!(lifted.is_err_and(|e| e.is_not_found()), "the entry the order created is deleted");
    let device = hub_device(&bed, &hub, &device_id).await;
    assert_eq!(device.status, Some(DeviceStatus::Enabled));
    let (again, _) = assigned(register(&bed.engine, "kiosk-7", with_group_key(GROUP_KEY)).await);
    assert_eq!(again, hub);
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_changed_registration_id_stalls_the_deprovision_and_blocks_nothing_else() {
    let bed = Bed::start("deprov-immutable").await;
    key_group(&bed, "kiosks").await;
    create(&bed, &deprovision("kiosk-3", "kiosk-3", json!({}))).await;
    let never = bed.wait_ready::<DeviceDeprovision>("kiosk-3").await.status.expect("status");
    assert!(never.message.unwrap_or_default().contains("never registered"), "no hub step, and status says so");
    assert!(never.device_id.is_none());
    let patch = json!({"spec": {"registrationId": "kiosk-4"}});
    bed.api::<DeviceDeprovision>()
        .patch("kiosk-3", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the apiserver (1.20) accepts the change");
    let stalled = bed.wait_condition::<DeviceDeprovision>("kiosk-3", "Stalled", "True").await;
    let ready = stalled.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.reason, "ImmutableFieldChanged");
    let untouched = bed.engine.dps().get_enrollment("kiosk-4").await;
    assert!(untouched.is_err_and(|e| e.is_not_found()), "no entry for the new ID");
    assigned(register(&bed.engine, "kiosk-4", with_group_key(GROUP_KEY)).await);
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_operator_killed_between_deprovision_steps_completes_the_order_after_restart_and_never_readmits_the_device()
{
    let steps = [
        "deprov-after-intent",
        "deprov-after-entry-written",
        "deprov-after-revoked",
        "deprov-after-deregistering",
        "deprov-after-hub-device",
    ];
    for step in steps {
        let mut bed = Bed::start_with("deprov-crash", &[(FAILPOINT, step)]).await;
        key_group(&bed, "pumps").await;
        let (hub, device_id) = assigned(register(&bed.engine, "pump-1", with_group_key(GROUP_KEY)).await);
        create(&bed, &deprovision("pump-1", "pump-1", json!({"reason": "compromised"}))).await;
        let code = bed.operator.wait_for_exit(Duration::from_secs(60)).await;
        assert_eq!(code, Some(86), "the operator did not stop at {step}");
        if step != "deprov-after-intent" {
            // The entry is written: from here on the device must stay out, crash or not.
            let meanwhile = register(&bed.engine, "pump-1", with_group_key(GROUP_KEY)).await;
            assert!(meanwhile.disabled(), "after {step} the device must be refused: {meanwhile:?}");
        }
        assigned(register(&bed.engine, "pump-2", with_group_key(GROUP_KEY)).await);

        bed.operator.restart_with(&[]);
        let status = bed.wait_ready::<DeviceDeprovision>("pump-1").await.status.expect("status");
        assert!(
            status.blocking_entry.expect("blocking entry").created,
            "after {step}: the entry is recognised as ours"
        );
        let entry = bed.engine.dps().get_enrollment("pump-1").await.expect("blocking entry");
        assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled), "after {step}");
        let device = hub_device(&bed, &hub, &device_id).await;
        assert_eq!(device.status, Some(DeviceStatus::Disabled), "after {step}");
        assert_eq!(device.status_reason.as_deref(), Some("compromised"), "after {step}");
        let after = register(&bed.engine, "pump-1", with_group_key(GROUP_KEY)).await;
        assert!(after.disabled(), "after {step}: {after:?}");
        let reasons = event_reasons(&bed, "DeviceDeprovision", "pump-1").await;
        assert!(!reasons.iter().any(|r| r == "EntryEnabled" || r == "HubDeviceEnabled"), "nothing undone: {reasons:?}");
        bed.ns.delete().await;
    }
}

#[tokio::test]
async fn deleting_a_reinstating_deprovision_re_enables_the_devices_own_entry_instead_of_deleting_it() {
    let bed = Bed::start("deprov-own-reinstate").await;
    let own = dps_operator::azure::wire::IndividualEnrollment {
        registration_id: "gate-2".into(),
        attestation: AttestationMechanism::symmetric_key(Some(Secret::new(GROUP_KEY.to_string())), None),
        ..Default::default()
    };
    bed.engine.dps().create_enrollment(&own).await.expect("own entry");
    let (hub, device_id) = assigned(register(&bed.engine, "gate-2", with_key(GROUP_KEY)).await);
    create(&bed, &deprovision("gate-2", "gate-2", json!({"onDelete": "Reinstate"}))).await;
    bed.wait_ready::<DeviceDeprovision>("gate-2").await;
    assert!(register(&bed.engine, "gate-2", with_key(GROUP_KEY)).await.disabled());

    bed.api::<DeviceDeprovision>().delete("gate-2", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<DeviceDeprovision>("gate-2").await;
    let entry = bed.engine.dps().get_enrollment("gate-2").await.expect("the device's own entry is kept");
    assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Enabled));
    let keys = bed.engine.dps().enrollment_attestation("gate-2").await.expect("attestation");
    let primary = keys.symmetric_key.and_then(|k| k.primary_key).expect("primary key");
    assert_eq!(primary.expose(), GROUP_KEY, "re-enabling keeps the device's key");
    assert_eq!(hub_device(&bed, &hub, &device_id).await.status, Some(DeviceStatus::Enabled));
    assigned(register(&bed.engine, "gate-2", with_key(GROUP_KEY)).await);
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_operator_killed_while_reinstating_finishes_after_restart_and_the_device_registers_again() {
    let mut bed = Bed::start_with("deprov-reinstate-crash", &[(FAILPOINT, "deprov-reinstate-after-hub-device")]).await;
    key_group(&bed, "pumps").await;
    let (hub, device_id) = assigned(register(&bed.engine, "pump-5", with_group_key(GROUP_KEY)).await);
    create(&bed, &deprovision("pump-5", "pump-5", json!({"onDelete": "Reinstate"}))).await;
    bed.wait_ready::<DeviceDeprovision>("pump-5").await;
    bed.api::<DeviceDeprovision>().delete("pump-5", &DeleteParams::default()).await.expect("delete accepted");
    let code = bed.operator.wait_for_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(86), "the operator did not stop after re-enabling the hub device");
    // The hub device is enabled but DPS still refuses the device until the entry goes.
    assert!(register(&bed.engine, "pump-5", with_group_key(GROUP_KEY)).await.disabled());

    bed.operator.restart_with(&[]);
    bed.wait_gone::<DeviceDeprovision>("pump-5").await;
    let lifted = bed.engine.dps().get_enrollment("pump-5").await;
    assert!(lifted.is_err_and(|e| e.is_not_found()), "the entry the order created is deleted");
    assert_eq!(hub_device(&bed, &hub, &device_id).await.status, Some(DeviceStatus::Enabled));
    assigned(register(&bed.engine, "pump-5", with_group_key(GROUP_KEY)).await);
    bed.ns.delete().await;
}

/// An IndividualEnrollment `name` with generated keys, Ready, and its device registered: the key.
async fn enrolled_device(bed: &Bed, name: &str) -> String {
    let enrollment: IndividualEnrollment = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": name },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": format!("{name}-keys"), "generate": true } },
        }
    }))
    .expect("a valid IndividualEnrollment");
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>(name).await;
    let secret = bed.api::<k8s_openapi::api::core::v1::Secret>().get(&format!("{name}-keys")).await.expect("keys");
    let key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key");
    assigned(register(&bed.engine, name, with_key(&key)).await);
    key
}

#[tokio::test]
async fn a_retained_deprovision_keeps_the_devices_own_enrollment_disabled_until_a_person_lifts_the_mark() {
    let bed = Bed::start("deprov-retain-own").await;
    let key = enrolled_device(&bed, "meter-12").await;
    let enrollments = bed.api::<IndividualEnrollment>();

    create(&bed, &deprovision("meter-12", "meter-12", json!({}))).await;
    bed.wait_ready::<DeviceDeprovision>("meter-12").await;
    bed.api::<DeviceDeprovision>().delete("meter-12", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<DeviceDeprovision>("meter-12").await;

    // The enrollment still says Enabled; the retained block wins, at once and after a resync of its own.
    let blocked = bed.wait_condition::<IndividualEnrollment>("meter-12", "Blocked", "True").await;
    let mark = blocked.metadata.annotations.unwrap_or_default();
    assert_eq!(mark.get("dps.iot-operator.dev/retained-revocation").map(String::as_str), Some("meter-12"));
    let poke = json!({"metadata": {"labels": {"poked": "yes"}}});
    enrollments.patch("meter-12", &PatchParams::default(), &Patch::Merge(&poke)).await.expect("patched");
    bed.wait_condition::<IndividualEnrollment>("meter-12", "Blocked", "True").await;
    let entry = bed.engine.dps().get_enrollment("meter-12").await.expect("entry");
    assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled), "the block stays");
    assert!(register(&bed.engine, "meter-12", with_key(&key)).await.disabled(), "the device stays refused");

    let lift = json!({"metadata": {"annotations": {"dps.iot-operator.dev/retained-revocation": null}}});
    enrollments.patch("meter-12", &PatchParams::default(), &Patch::Merge(&lift)).await.expect("lifted");
    bed.wait_condition::<IndividualEnrollment>("meter-12", "Blocked", "False").await;
    assigned(register(&bed.engine, "meter-12", with_key(&key)).await);
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_operator_killed_after_marking_the_enrollment_releases_the_retained_deprovision_after_restart_and_the_device_stays_refused()
 {
    let mut bed = Bed::start_with("deprov-retain-crash", &[(FAILPOINT, "deprov-retain-after-mark")]).await;
    let key = enrolled_device(&bed, "meter-14").await;
    create(&bed, &deprovision("meter-14", "meter-14", json!({}))).await;
    bed.wait_ready::<DeviceDeprovision>("meter-14").await;
    bed.api::<DeviceDeprovision>().delete("meter-14", &DeleteParams::default()).await.expect("delete accepted");
    let code = bed.operator.wait_for_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(86), "the operator did not stop after marking the enrollment");
    assert!(register(&bed.engine, "meter-14", with_key(&key)).await.disabled(), "refused while the operator is down");

    bed.operator.restart_with(&[]);
    bed.wait_gone::<DeviceDeprovision>("meter-14").await;
    let blocked = bed.wait_condition::<IndividualEnrollment>("meter-14", "Blocked", "True").await;
    let mark = blocked.metadata.annotations.unwrap_or_default();
    assert_eq!(mark.get("dps.iot-operator.dev/retained-revocation").map(String::as_str), Some("meter-14"));
    let entry = bed.engine.dps().get_enrollment("meter-14").await.expect("entry");
    assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled), "the block stays");
    assert!(register(&bed.engine, "meter-14", with_key(&key)).await.disabled(), "the device stays refused");
    let reasons = event_reasons(&bed, "DeviceDeprovision", "meter-14").await;
    assert!(reasons.iter().any(|r| r == "BlockRetained"), "the mark is told even after the crash: {reasons:?}");
    bed.ns.delete().await;
}
