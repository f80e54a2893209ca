//! The IndividualEnrollment controller against the real apiserver and the engine over HTTPS: entries
//! created and kept in sync, devices admitted and refused, and the revocation order on deletion.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use dps_operator::controller::failpoint::ENV as FAILPOINT;

use dps_operator::api::IndividualEnrollment;
use dps_operator::azure::wire::{DeviceStatus, ProvisioningStatus};

use crate::support::device::{Registration, register, with_key};
use crate::support::operator::{Bed, SERVICE};

/// An IndividualEnrollment with symmetric keys from `secret`, generated when `generate`.
pub fn symmetric_enrollment(
    name: &str,
    secret: &str,
    generate: bool,
    on_delete: serde_json::Value,
) -> IndividualEnrollment {
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": name },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": secret, "generate": generate } },
            "onDelete": on_delete,
        }
    }))
    .expect("a valid IndividualEnrollment")
}

/// The primary key the enrollment's key Secret holds.
pub async fn primary_key(bed: &Bed, secret: &str) -> String {
    let secret = bed.api::<Secret>().get(secret).await.expect("the key Secret exists");
    let bytes = secret.data.expect("data")["primaryKey"].0.clone();
    String::from_utf8(bytes).expect("UTF-8 key")
}

/// The reasons of the events on `name`, oldest first.
pub async fn event_reasons(bed: &Bed, kind: &str, name: &str) -> Vec<String> {
    let events = bed.api::<Event>().list(&ListParams::default()).await.expect("events list");
    let mut mine: Vec<Event> = events
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| r.name.as_deref() == Some(name) && r.kind.as_deref() == Some(kind))
        })
        .collect();
    mine.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    mine.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test]
async fn individual_enrollment_with_generated_keys_becomes_ready_and_its_device_registers() {
    let bed = Bed::start("ienr-gen").await;
    let enrollment = symmetric_enrollment("thermostat-1", "thermostat-1-keys", true, json!({}));
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    let ready = bed.wait_ready::<IndividualEnrollment>("thermostat-1").await;
    let status = ready.status.expect("status");
    assert_eq!(status.registration_id.as_deref(), Some("thermostat-1"));
    assert!(status.etag.is_some(), "the entry's etag is recorded");

    let secret = bed.api::<Secret>().get("thermostat-1-keys").await.expect("generated Secret");
    let owner = secret.owner_references().first().cloned().expect("the Secret is owned");
    assert_eq!(owner.uid, ready.metadata.uid.clone().expect("uid"));
    let key = primary_key(&bed, "thermostat-1-keys").await;
    let registration = register(&bed.engine, "thermostat-1", with_key(&key)).await;
    assert!(matches!(registration, Registration::Assigned { .. }), "{registration:?}");

    let held = bed.engine.dps().get_enrollment("thermostat-1").await.expect("entry exists in DPS");
    assert_eq!(held.provisioning_status, Some(ProvisioningStatus::Enabled));
    bed.ns.delete().await;
}

#[tokio::test]
async fn deleting_an_individual_enrollment_disables_the_entry_then_the_hub_device_then_deletes_the_entry() {
    let bed = Bed::start("ienr-del").await;
    let enrollment = symmetric_enrollment("meter-7", "meter-7-keys", true, json!({}));
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("meter-7").await;
    let key = primary_key(&bed, "meter-7-keys").await;
    let Registration::Assigned { hub, device_id } = register(&bed.engine, "meter-7", with_key(&key)).await else {
        panic!("the enrolled device was refused");
    };
    api.delete("meter-7", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<IndividualEnrollment>("meter-7").await;

    let dps = bed.engine.dps();
    assert!(dps.get_enrollment("meter-7").await.expect_err("entry is deleted").is_not_found());
    let hub_index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("a known hub");
    let device = bed.engine.hub(hub_index).get_device(&device_id).await.expect("device kept, disabled");
    assert_eq!(device.status, Some(DeviceStatus::Disabled));
    assert!(device.status_reason.unwrap_or_default().contains("meter-7"));
    let refused = register(&bed.engine, "meter-7", with_key(&key)).await;
    assert!(refused.refused_at_register(), "the revoked device (entry deleted) is refused at register: {refused:?}");

    let reasons = event_reasons(&bed, "IndividualEnrollment", "meter-7").await;
    let order: Vec<&str> = reasons
        .iter()
        .map(String::as_str)
        .filter(|r| ["EntryDisabled", "HubDeviceDisabled", "EntryDeleted"].contains(r))
        .collect();
    assert_eq!(order, ["EntryDisabled", "HubDeviceDisabled", "EntryDeleted"], "all events: {reasons:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn missing_key_secret_stalls_the_enrollment_until_the_secret_appears() {
    let bed = Bed::start("ienr-missing").await;
    let enrollment = symmetric_enrollment("pump-3", "pump-3-keys", false, json!({}));
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    let stalled = bed.wait_condition::<IndividualEnrollment>("pump-3", "Stalled", "True").await;
    let ready = stalled.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "SecretNotFound");
    assert!(ready.message.contains("pump-3-keys"), "{}", ready.message);

    let key = "c2VjcmV0LWtleS1mb3ItcHVtcC0zLTAxMjM0NTY3ODk=";
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pump-3-keys"},
        "stringData": {"primaryKey": key, "secondaryKey": key}
    }))
    .expect("Secret");
    bed.api::<Secret>().create(&PostParams::default(), &secret).await.expect("Secret created");
    bed.wait_ready::<IndividualEnrollment>("pump-3").await;
    let registration = register(&bed.engine, "pump-3", with_key(key)).await;
    assert!(matches!(registration, Registration::Assigned { .. }), "{registration:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_operator_killed_between_deletion_steps_finishes_the_order_after_restart_and_never_readmits_the_device() {
    for step in ["ienr-after-entry-disabled", "ienr-after-registration-read", "ienr-after-device-revoked"] {
        let mut bed = Bed::start_with("ienr-crash", &[(FAILPOINT, step)]).await;
        let name = "crashy-1";
        let api = bed.api::<IndividualEnrollment>();
        api.create(
            &PostParams::default(),
            &symmetric_enrollment(name, "crashy-keys", true, json!({"device": "Delete"})),
        )
        .await
        .expect("created");
        bed.wait_ready::<IndividualEnrollment>(name).await;
        let key = primary_key(&bed, "crashy-keys").await;
        let Registration::Assigned { hub, device_id } = register(&bed.engine, name, with_key(&key)).await else {
            panic!("the enrolled device was refused");
        };
        api.delete(name, &DeleteParams::default()).await.expect("delete accepted");
        let code = bed.operator.wait_for_exit(Duration::from_secs(60)).await;
        assert_eq!(code, Some(86), "the operator did not stop at {step}");
        // Between the crash and the restart, the device is already revoked at DPS.
        let meanwhile = register(&bed.engine, name, with_key(&key)).await;
        assert!(meanwhile.disabled(), "after {step} the device must be refused (entry disabled): {meanwhile:?}");

        bed.operator.restart_with(&[]);
        bed.wait_gone::<IndividualEnrollment>(name).await;
        assert!(bed.engine.dps().get_enrollment(name).await.expect_err("entry deleted").is_not_found());
        let hub_index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("a known hub");
        let gone = bed.engine.hub(hub_index).get_device(&device_id).await;
        assert!(gone.is_err_and(|e| e.is_not_found()), "after {step}: the hub device is deleted");
        let after = register(&bed.engine, name, with_key(&key)).await;
        assert!(after.refused_at_register(), "after {step}: {after:?}");
        bed.ns.delete().await;
    }
}

#[tokio::test]
async fn an_operator_killed_right_after_creating_the_entry_finds_it_its_own_after_restart_and_revokes_it_on_deletion() {
    let mut bed = Bed::start_with("ienr-create-crash", &[(FAILPOINT, "ienr-after-entry-created")]).await;
    let name = "fresh-4";
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &symmetric_enrollment(name, "fresh-4-keys", true, json!({})))
        .await
        .expect("created");
    assert_eq!(bed.operator.wait_for_exit(Duration::from_secs(60)).await, Some(86), "no stop after the create");
    bed.engine.dps().get_enrollment(name).await.expect("the entry was created before the crash");
    let stopped = api.get(name).await.expect("the resource");
    assert!(stopped.status.as_ref().and_then(|s| s.ownership).is_none(), "status has no record yet: {stopped:?}");

    bed.operator.restart_with(&[]);
    let ready = bed.wait_ready::<IndividualEnrollment>(name).await;
    let status = ready.status.expect("status");
    assert_eq!(status.ownership, Some(dps_operator::api::individual_enrollment::EntryOwnership::Created));
    assert_eq!(status.registration_id.as_deref(), Some(name));
    // The keys DPS generated reached their Secret although the crash came before that step.
    let key = primary_key(&bed, "fresh-4-keys").await;
    assert!(matches!(register(&bed.engine, name, with_key(&key)).await, Registration::Assigned { .. }));

    api.delete(name, &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<IndividualEnrollment>(name).await;
    assert!(bed.engine.dps().get_enrollment(name).await.expect_err("entry deleted").is_not_found());
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_new_enrollment_costs_the_apiserver_two_writes_its_finalizer_with_the_claim_and_its_ready_status() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let bed = Bed::start("ienr-two-writes").await;
    let name = "frugal-6";
    let api = bed.api::<IndividualEnrollment>();
    let from = api.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("version");
    let watch =
        api.watch(&WatchParams::default().fields(&format!("metadata.name={name}")), &from).await.expect("watch");
    api.create(&PostParams::default(), &symmetric_enrollment(name, "frugal-6-keys", true, json!({})))
        .await
        .expect("created");
    let mut watch = watch.boxed();
    let mut modifications = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let event = tokio::time::timeout_at(deadline, watch.try_next()).await.expect("Ready within 60 s");
        match event.expect("watch").expect("watch open") {
            WatchEvent::Modified(e) => {
                modifications += 1;
                let conditions = e.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
                if conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
                    break e;
                }
            }
            WatchEvent::Added(_) | WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected watch event {other:?}"),
        }
    };
    assert_eq!(modifications, 2, "writes until Ready (finalizer with the claim, then the status)");
    assert!(ready.finalizers().iter().any(|f| f == dps_operator::controller::FINALIZER));
    let annotation = ready.annotations().get(dps_operator::controller::ownership::CREATED_ANNOTATION).cloned();
    assert_eq!(annotation.as_deref(), Some(name));
    bed.ns.delete().await;
}

#[tokio::test]
async fn disabling_the_entry_in_the_spec_refuses_the_device_and_enabling_it_admits_it_again() {
    let bed = Bed::start("ienr-toggle").await;
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &symmetric_enrollment("fan-2", "fan-2-keys", true, json!({})))
        .await
        .expect("created");
    bed.wait_ready::<IndividualEnrollment>("fan-2").await;
    let key = primary_key(&bed, "fan-2-keys").await;
    assert!(matches!(register(&bed.engine, "fan-2", with_key(&key)).await, Registration::Assigned { .. }));
    let patch = |status: &str| kube::api::Patch::Merge(json!({"spec": {"provisioningStatus": status}}));
    api.patch("fan-2", &kube::api::PatchParams::default(), &patch("Disabled")).await.expect("disable");
    bed.wait_ready::<IndividualEnrollment>("fan-2").await;
    assert!(register(&bed.engine, "fan-2", with_key(&key)).await.disabled(), "a disabled entry refuses its device");
    api.patch("fan-2", &kube::api::PatchParams::default(), &patch("Enabled")).await.expect("enable");
    bed.wait_ready::<IndividualEnrollment>("fan-2").await;
    assert!(matches!(register(&bed.engine, "fan-2", with_key(&key)).await, Registration::Assigned { .. }));
    let reasons = event_reasons(&bed, "IndividualEnrollment", "fan-2").await;
    assert!(
        reasons.contains(&"EntryDisabled".to_string()) && reasons.contains(&"EntryEnabled".to_string()),
        "{reasons:?}"
    );
    bed.ns.delete().await;
}

#[tokio::test]
async fn every_on_delete_combination_leaves_the_entry_and_the_hub_device_as_it_says() {
    let bed = Bed::start("ienr-policy").await;
    let api = bed.api::<IndividualEnrollment>();
    let mut cases = Vec::new();
    for enrollment in ["Delete", "Disable", "Retain"] {
        for device in ["Delete", "Disable", "Retain"] {
            let name = format!("p-{}-{}", enrollment.to_lowercase(), device.to_lowercase());
            let on_delete = json!({"enrollment": enrollment, "device": device});
            let secret = format!("{name}-keys");
            api.create(&PostParams::default(), &symmetric_enrollment(&name, &secret, true, on_delete))
                .await
                .expect("created");
            cases.push((name, secret, enrollment, device));
        }
    }
    let mut registered = Vec::new();
    for (name, secret, enrollment, device) in &cases {
        bed.wait_ready::<IndividualEnrollment>(name).await;
        let key = primary_key(&bed, secret).await;
        let Registration::Assigned { hub, device_id } = register(&bed.engine, name, with_key(&key)).await else {
            panic!("{name} was refused");
        };
        registered.push((name.clone(), key, hub, device_id, *enrollment, *device));
    }
    for (name, ..) in &registered {
        api.delete(name, &DeleteParams::default()).await.expect("delete accepted");
    }
    let dps = bed.engine.dps();
    for (name, key, hub, device_id, enrollment, device) in registered {
        bed.wait_gone::<IndividualEnrollment>(&name).await;
        let entry = dps.get_enrollment(&name).await;
        let after = register(&bed.engine, &name, with_key(&key)).await;
        match enrollment {
            "Delete" => {
                assert!(entry.is_err_and(|e| e.is_not_found()), "{name}: entry deleted");
                assert!(after.refused_at_register(), "{name}: {after:?}");
            }
            "Disable" => {
                let entry = entry.expect("entry kept");
                assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled), "{name}");
                assert!(after.disabled(), "{name}: {after:?}");
            }
            _ => {
                let entry = entry.expect("entry kept");
                assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Enabled), "{name}");
                assert!(
                    matches!(after, Registration::Assigned { .. }),
                    "{name}: the retained entry still admits: {after:?}"
                );
            }
        }
        let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("known hub");
        let held = bed.engine.hub(index).get_device(&device_id).await;
        match (device, enrollment) {
            ("Delete", _) => {
                // With a retained entry the device just registered again above, which recreates it.
                if enrollment != "Retain" {
                    assert!(held.is_err_and(|e| e.is_not_found()), "{name}: hub device deleted");
                }
            }
            ("Disable", _) => {
                assert_eq!(
                    held.expect("device kept").status,
                    Some(DeviceStatus::Disabled),
                    "{name}: hub device disabled"
                )
            }
            _ => assert_eq!(
                held.expect("device kept").status,
                Some(DeviceStatus::Enabled),
                "{name}: hub device untouched"
            ),
        }
    }
    bed.ns.delete().await;
}
