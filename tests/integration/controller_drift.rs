//! Drift: an entry changed directly in DPS (portal, CLI, another tool) is put back at the next resync, with a
//! Warning event `DriftReverted` naming what changed; an entry that matches is not written at all.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::{DeviceDeprovision, IndividualEnrollment, ProvisioningService};
use dps_operator::azure::Secret;
use dps_operator::azure::wire::{AttestationMechanism, DeviceStatus, EnrollmentGroup, ProvisioningStatus};

use crate::support::device::{Registration, register, with_group_key};
use crate::support::eventually;
use crate::support::operator::{Bed, SERVICE};
use crate::support::process::strip_colours;

#[tokio::test]
async fn an_entry_re_enabled_behind_the_operators_back_is_disabled_again_with_drift_reverted() {
    let bed = Bed::start_with("ienr-drift", &[("DPS_OPERATOR_RESYNC_SECONDS", "2")]).await;
    let enrollment: IndividualEnrollment = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
        "metadata": { "name": "kiosk-4" },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "provisioningStatus": "Disabled",
            "attestation": { "symmetricKey": { "secretName": "kiosk-4-keys", "generate": true } },
        }
    }))
    .expect("IndividualEnrollment");
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("kiosk-4").await;
    let dps = bed.engine.dps();
    let in_sync = dps.get_enrollment("kiosk-4").await.expect("entry");

    // Resyncs of an entry that matches write nothing: once the operator has read it twice more, its etag is
    // still the same.
    let reads = || {
        strip_colours(&bed.engine.log())
            .lines()
            .filter(|l| l.contains("method=GET") && l.contains("path=/enrollments/kiosk-4 "))
            .count()
    };
    let before = reads();
    eventually("two more resyncs of the entry", Duration::from_secs(30), || {
        let n = reads();
        async move { (n >= before + 2).then_some(()) }
    })
    .await;
    let still = dps.get_enrollment("kiosk-4").await.expect("entry");
    assert_eq!(still.etag, in_sync.etag, "a resync of a matching entry wrote to DPS");

    // Someone re-enables the entry directly in DPS.
    let mut changed = still.clone();
    changed.provisioning_status = Some(ProvisioningStatus::Enabled);
    changed.attestation = dps.enrollment_attestation("kiosk-4").await.expect("keys");
    changed.registration_state = None;
    dps.update_enrollment(&changed, still.etag.as_deref()).await.expect("changed outside Kubernetes");

    eventually("the entry to be disabled again", Duration::from_secs(30), || {
        let dps = dps.clone();
        async move {
            let held = dps.get_enrollment("kiosk-4").await.ok()?;
            (held.provisioning_status == Some(ProvisioningStatus::Disabled)).then_some(())
        }
    })
    .await;
    // The event follows the DPS write that put the entry back.
    eventually("a DriftReverted warning naming provisioningStatus", Duration::from_secs(10), || async {
        let events = bed.api::<Event>().list(&ListParams::default()).await.expect("events");
        events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("DriftReverted") && e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.note)
            .any(|n| n.contains("provisioningStatus"))
            .then_some(())
    })
    .await;
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_revoked_device_re_enabled_in_its_hub_or_at_dps_is_revoked_again_with_drift_reverted() {
    let bed = Bed::start_with("deprov-drift", &[("DPS_OPERATOR_RESYNC_SECONDS", "2")]).await;
    let group_key = "bXktZ3JvdXAta2V5LWZvci1kcmlmdC10ZXN0cy0xMjM0NTY3ODkwMTI=";
    let group = EnrollmentGroup {
        enrollment_group_id: "arcade".into(),
        attestation: AttestationMechanism::symmetric_key(Some(Secret::new(group_key.to_string())), None),
        ..EnrollmentGroup::default()
    };
    let dps = bed.engine.dps();
    dps.create_enrollment_group(&group).await.expect("group enrolled");
    let Registration::Assigned { hub, device_id } = register(&bed.engine, "arcade-7", with_group_key(group_key)).await
    else {
        panic!("the group device was refused");
    };
    let order: DeviceDeprovision = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "DeviceDeprovision",
        "metadata": { "name": "arcade-7-stolen" },
        "spec": { "provisioningServiceRef": { "name": SERVICE }, "registrationId": "arcade-7", "reason": "stolen" }
    }))
    .expect("DeviceDeprovision");
    bed.api::<DeviceDeprovision>().create(&PostParams::default(), &order).await.expect("created");
    bed.wait_ready::<DeviceDeprovision>("arcade-7-stolen").await;

    // Someone re-enables the device in its hub and the blocking entry at DPS.
    let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("known hub");
    let registry = bed.engine.hub(index);
    let mut device = registry.get_device(&device_id).await.expect("device");
    device.status = Some(DeviceStatus::Enabled);
    let etag = device.etag.clone();
    registry.update_device(&device, etag.as_deref()).await.expect("re-enabled outside Kubernetes");
    let mut entry = dps.get_enrollment("arcade-7").await.expect("blocking entry");
    entry.provisioning_status = Some(ProvisioningStatus::Enabled);
    entry.attestation = dps.enrollment_attestation("arcade-7").await.expect("keys");
    entry.registration_state = None;
    let etag = entry.etag.clone();
    dps.update_enrollment(&entry, etag.as_deref()).await.expect("re-enabled outside Kubernetes");

    eventually("the device and the entry to be revoked again", Duration::from_secs(30), || {
        let (dps, registry, device_id) = (dps.clone(), registry.clone(), device_id.clone());
        async move {
            let entry = dps.get_enrollment("arcade-7").await.ok()?;
            let device = registry.get_device(&device_id).await.ok()?;
            (entry.provisioning_status == Some(ProvisioningStatus::Disabled)
                && device.status == Some(DeviceStatus::Disabled))
            .then_some(())
        }
    })
    .await;
    assert!(register(&bed.engine, "arcade-7", with_group_key(group_key)).await.disabled());
    // The operator folds repeats of one reason into a series, so count occurrences, not objects; the
    // events follow the writes that put things back.
    eventually("one DriftReverted for the entry and one for the hub device", Duration::from_secs(10), || async {
        let events = bed.api::<Event>().list(&ListParams::default()).await.expect("events");
        let drift: i32 = events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("DriftReverted"))
            .map(|e| e.series.map_or(1, |s| s.count))
            .sum();
        (drift >= 2).then_some(())
    })
    .await;
    bed.ns.delete().await;
}

#[tokio::test]
async fn resyncs_of_in_sync_enrollments_read_no_faster_than_their_share_of_the_rate_budget() {
    // 600 DPS operations a minute, 10 % of them for resyncs: 1 read a second after a burst of 10.
    let bed = Bed::start_with(
        "ienr-share",
        &[("DPS_OPERATOR_RESYNC_SECONDS", "1"), ("DPS_OPERATOR_RESYNC_BUDGET_PERCENT", "10")],
    )
    .await;
    let limits = json!({"spec": {"rateLimits": {"serviceOperationsPerMinute": 600}}});
    bed.api::<ProvisioningService>()
        .patch(SERVICE, &PatchParams::default(), &Patch::Merge(limits))
        .await
        .expect("rate limit set");
    let names: Vec<String> = (0..5).map(|i| format!("share-{i}")).collect();
    for name in &names {
        let enrollment: IndividualEnrollment = serde_json::from_value(json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
            "metadata": { "name": name },
            "spec": {
                "provisioningServiceRef": { "name": SERVICE },
                "attestation": { "symmetricKey": { "secretName": format!("{name}-keys"), "generate": true } },
            }
        }))
        .expect("IndividualEnrollment");
        bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    }
    for name in &names {
        bed.wait_ready::<IndividualEnrollment>(name).await;
    }
    // Five in-sync enrollments resynced every second want about 15 reads a second; the share allows 1.
    let reads = || {
        strip_colours(&bed.engine.log())
            .lines()
            .filter(|l| l.contains("path=/enrollments/share-") || l.contains("path=/registrations/share-"))
            .filter(|l| l.contains("method=GET") || l.contains("method=POST"))
            .count()
    };
    let before = reads();
    let started = std::time::Instant::now();
    eventually("30 more resync reads", Duration::from_secs(120), || {
        let n = reads();
        async move { (n >= before + 30).then_some(()) }
    })
    .await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(15), "30 resync reads took {took:?}: the share (1/s after 10) was not applied");
    bed.ns.delete().await;
}
