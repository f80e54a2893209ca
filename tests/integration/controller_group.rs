//! The EnrollmentGroup controller against the real apiserver and the engine over HTTPS: groups admitting
//! devices, certificate checks, the deletion order over many devices and hubs, DeleteIfSafe above a
//! root group, and crash safety between the steps.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::EnrollmentGroup;
use dps_operator::azure::wire::{self, DeviceStatus, ProvisioningStatus};

use crate::controller_individual::event_reasons;
use crate::support::certs::{TestCa, Validity};
use crate::support::device::{Registration, register, with_certificate, with_group_key};
use crate::support::eventually;
use crate::support::operator::{Bed, SERVICE};
use crate::support::raw::bulk_request_sizes;

pub(crate) fn group(name: &str, attestation: serde_json::Value, extra: serde_json::Value) -> EnrollmentGroup {
    let mut spec = json!({
        "provisioningServiceRef": { "name": SERVICE },
        "attestation": attestation,
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "EnrollmentGroup",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("a valid EnrollmentGroup")
}

pub(crate) fn generated_keys(secret: &str) -> serde_json::Value {
    json!({ "symmetricKey": { "secretName": secret, "generate": true } })
}

fn signing_pem(pem: String) -> serde_json::Value {
    json!({ "x509": { "signingCertificates": { "primary": { "pem": pem } } } })
}

async fn group_key(bed: &Bed, secret: &str) -> String {
    let secret = bed.api::<Secret>().get(secret).await.expect("the key Secret exists");
    String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key")
}

/// Registers `ids` with the group key, a few at a time; every one must be assigned. Returns (hub, device).
pub(crate) async fn register_all(bed: &Bed, key: &str, ids: &[String]) -> Vec<(String, String)> {
    futures::stream::iter(ids.iter().cloned())
        .map(|id| async move {
            match register(&bed.engine, &id, with_group_key(key)).await {
                Registration::Assigned { hub, device_id } => (hub, device_id),
                other => panic!("{id} was refused: {other:?}"),
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

fn hub_index(bed: &Bed, hub: &str) -> usize {
    bed.engine.info.hubs.iter().position(|h| h.host_name.eq_ignore_ascii_case(hub)).expect("a known hub")
}

async fn device_status(bed: &Bed, hub: &str, device_id: &str) -> Option<DeviceStatus> {
    match bed.engine.hub(hub_index(bed, hub)).get_device(device_id).await {
        Ok(device) => device.status,
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("reading device {device_id}: {e}"),
    }
}

fn only<'a>(reasons: &'a [String], wanted: &[&str]) -> Vec<&'a str> {
    let mut seen: Vec<&str> = reasons.iter().map(String::as_str).filter(|r| wanted.contains(r)).collect();
    seen.dedup();
    seen
}

#[tokio::test]
async fn symmetric_key_group_with_generated_keys_admits_a_device_and_counts_it() {
    let bed = Bed::start("egrp-sym").await;
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group("fleet-a", generated_keys("fleet-a-keys"), json!({})))
        .await
        .expect("created");
    let ready = bed.wait_ready::<EnrollmentGroup>("fleet-a").await;
    let status = ready.status.expect("status");
    assert_eq!(status.enrollment_group_id.as_deref(), Some("fleet-a"), "the ID defaults to the name");
    assert_eq!(status.registered_devices, Some(0));
    let held = bed.engine.dps().get_enrollment_group("fleet-a").await.expect("group exists in DPS");
    assert_eq!(held.provisioning_status, Some(ProvisioningStatus::Enabled));

    let key = group_key(&bed, "fleet-a-keys").await;
    let registration = register(&bed.engine, "fleet-a-dev-1", with_group_key(&key)).await;
    assert!(matches!(registration, Registration::Assigned { .. }), "{registration:?}");
    // Any change makes the controller look again; the count follows the registration records.
    let touch = json!({ "metadata": { "annotations": { "test/touch": "1" } } });
    api.patch("fleet-a", &PatchParams::default(), &Patch::Merge(&touch)).await.expect("annotated");
    eventually("registeredDevices to count the device", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let g = api.get("fleet-a").await.ok()?;
            (g.status?.registered_devices == Some(1)).then_some(())
        }
    })
    .await;
    bed.ns.delete().await;
}

#[tokio::test]
async fn x509_group_with_an_expired_or_non_ca_signing_certificate_is_stalled() {
    let bed = Bed::start("egrp-certs").await;
    let api = bed.api::<EnrollmentGroup>();
    let expired = TestCa::root_with("Expired Root", Validity::Expired);
    api.create(&PostParams::default(), &group("old-ca", signing_pem(expired.cert_pem()), json!({})))
        .await
        .expect("created");
    let root = TestCa::root("Device Root");
    let not_ca = root.end_entity_as_issuer("some-device");
    api.create(&PostParams::default(), &group("leaf-ca", signing_pem(not_ca.cert_pem()), json!({})))
        .await
        .expect("created");
    for (name, reason) in [("old-ca", "CertificateExpired"), ("leaf-ca", "CertificateNotCA")] {
        let stalled = bed.wait_condition::<EnrollmentGroup>(name, "Stalled", "True").await;
        let ready = stalled.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!(ready.reason, reason, "{name}: {}", ready.message);
        let missing = bed.engine.dps().get_enrollment_group(name).await.expect_err("nothing written to DPS");
        assert!(missing.is_not_found());
    }
    bed.ns.delete().await;
}

#[tokio::test]
async fn deleting_a_group_disables_it_then_its_devices_in_their_hubs_then_its_records_then_deletes_it() {
    let bed = Bed::start("egrp-del").await;
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group("fleet-b", generated_keys("fleet-b-keys"), json!({})))
        .await
        .expect("created");
    bed.wait_ready::<EnrollmentGroup>("fleet-b").await;
    let key = group_key(&bed, "fleet-b-keys").await;
    let ids: Vec<String> = (1..=6).map(|i| format!("fleet-b-{i}")).collect();
    let devices = register_all(&bed, &key, &ids).await;

    api.delete("fleet-b", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<EnrollmentGroup>("fleet-b").await;

    let dps = bed.engine.dps();
    assert!(dps.get_enrollment_group("fleet-b").await.expect_err("group deleted").is_not_found());
    for (hub, device_id) in &devices {
        assert_eq!(device_status(&bed, hub, device_id).await, Some(DeviceStatus::Disabled), "{device_id} in {hub}");
        assert!(dps.get_registration_state(device_id).await.expect_err("record deleted").is_not_found());
        let again = register(&bed.engine, device_id, with_group_key(&key)).await;
        assert!(again.refused_at_register(), "a revoked device registered again: {again:?}");
    }
    let reasons = event_reasons(&bed, "EnrollmentGroup", "fleet-b").await;
    let order = only(&reasons, &["GroupDisabled", "HubDevicesDisabled", "RegistrationsDeleted", "GroupDeleted"]);
    assert_eq!(order, ["GroupDisabled", "HubDevicesDisabled", "RegistrationsDeleted", "GroupDeleted"], "{reasons:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn deleting_a_group_of_101_devices_deletes_them_in_hub_bulk_calls_of_at_most_100() {
    let bed = Bed::start("egrp-bulk").await;
    let hub = bed.engine.info.hubs[0].host_name.clone();
    let api = bed.api::<EnrollmentGroup>();
    let extra = json!({ "iotHubs": [hub.clone()], "onDelete": { "devices": "Delete" } });
    api.create(&PostParams::default(), &group("fleet-c", generated_keys("fleet-c-keys"), extra))
        .await
        .expect("created");
    bed.wait_ready::<EnrollmentGroup>("fleet-c").await;
    let key = group_key(&bed, "fleet-c-keys").await;
    let ids: Vec<String> = (0..101).map(|i| format!("fleet-c-{i:03}")).collect();
    let devices = register_all(&bed, &key, &ids).await;
    assert!(devices.iter().all(|(h, _)| h.eq_ignore_ascii_case(&hub)), "every device is in the one hub");

    api.delete("fleet-c", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<EnrollmentGroup>("fleet-c").await;
    let mut sizes = bulk_request_sizes(&bed.engine, &hub, "/devices").await;
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 100], "100 devices a bulk call across the pages of registration states");
    let hub_client = bed.engine.hub(hub_index(&bed, &hub));
    let left = hub_client.query_all_devices("SELECT * FROM devices", None).await.expect("query");
    assert!(left.is_empty(), "{} devices remain", left.len());
    bed.ns.delete().await;
}

#[tokio::test]
async fn delete_if_safe_keeps_an_intermediate_group_disabled_under_an_enabled_root_group_and_its_device_stays_refused()
{
    let bed = Bed::start("egrp-safe").await;
    let root = TestCa::root("Contoso Root");
    let intermediate = root.intermediate("Contoso Line 1");
    // A group the operator does not manage, higher in the chain.
    let root_group = wire::EnrollmentGroup {
        enrollment_group_id: "contoso-root".into(),
        attestation: wire::AttestationMechanism::x509_signing_certificate(root.cert_pem(), None),
        ..Default::default()
    };
    bed.engine.dps().create_enrollment_group(&root_group).await.expect("root group");
    // A look-alike root (same name, other key) in an enabled group must not count: signatures decide.
    let impostor = TestCa::root("Contoso Root");
    let impostor_group = wire::EnrollmentGroup {
        enrollment_group_id: "impostor-root".into(),
        attestation: wire::AttestationMechanism::x509_signing_certificate(impostor.cert_pem(), None),
        ..Default::default()
    };
    bed.engine.dps().create_enrollment_group(&impostor_group).await.expect("impostor group");

    let api = bed.api::<EnrollmentGroup>();
    let bundle = format!("{}{}", intermediate.cert_pem(), root.cert_pem());
    api.create(&PostParams::default(), &group("line-1", signing_pem(bundle), json!({}))).await.expect("created");
    bed.wait_ready::<EnrollmentGroup>("line-1").await;
    let risky = bed.wait_condition::<EnrollmentGroup>("line-1", "ReEnrollmentRisk", "True").await;
    let status = risky.status.expect("status");
    assert_eq!(status.re_enrollment_risk, ["contoso-root"]);
    let condition = status.conditions.iter().find(|c| c.type_ == "ReEnrollmentRisk").expect("condition");
    assert!(condition.message.contains("contoso-root"), "{}", condition.message);

    let leaf = intermediate.leaf("line-1-sensor");
    let Registration::Assigned { hub, device_id } =
        register(&bed.engine, "line-1-sensor", with_certificate(&leaf)).await
    else {
        panic!("the group's device was refused");
    };
    api.delete("line-1", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<EnrollmentGroup>("line-1").await;

    let kept = bed.engine.dps().get_enrollment_group("line-1").await.expect("the group is kept");
    assert_eq!(kept.provisioning_status, Some(ProvisioningStatus::Disabled));
    assert_eq!(device_status(&bed, &hub, &device_id).await, Some(DeviceStatus::Disabled));
    let again = register(&bed.engine, "line-1-sensor", with_certificate(&leaf)).await;
    assert!(again.disabled(), "the device must stay refused by the kept group: {again:?}");
    let reasons = event_reasons(&bed, "EnrollmentGroup", "line-1").await;
    assert!(reasons.iter().any(|r| r == "GroupKept"), "{reasons:?}");
    assert!(!reasons.iter().any(|r| r == "GroupDeleted"), "{reasons:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_operator_killed_right_after_creating_the_group_finds_it_its_own_after_restart_and_removes_it_on_deletion() {
    let mut bed = Bed::start_with("egrp-create-crash", &[("DPS_OPERATOR_FAILPOINT", "egrp-after-group-created")]).await;
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group("fleet-n", generated_keys("fleet-n-keys"), json!({})))
        .await
        .expect("created");
    assert_eq!(bed.operator.wait_for_exit(Duration::from_secs(60)).await, Some(86), "no stop after the create");
    let dps = bed.engine.dps();
    dps.get_enrollment_group("fleet-n").await.expect("the group was created before the crash");
    let stopped = api.get("fleet-n").await.expect("the resource");
    assert!(stopped.status.as_ref().and_then(|s| s.ownership).is_none(), "no record in status yet: {stopped:?}");

    bed.operator.restart_with(&[]);
    let ready = bed.wait_ready::<EnrollmentGroup>("fleet-n").await;
    let status = ready.status.expect("status");
    assert_eq!(status.ownership, Some(dps_operator::api::individual_enrollment::EntryOwnership::Created));
    let key = group_key(&bed, "fleet-n-keys").await;
    assert!(matches!(register(&bed.engine, "fleet-n-1", with_group_key(&key)).await, Registration::Assigned { .. }));

    api.delete("fleet-n", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<EnrollmentGroup>("fleet-n").await;
    assert!(dps.get_enrollment_group("fleet-n").await.expect_err("group deleted").is_not_found());
    bed.ns.delete().await;
}

#[tokio::test]
async fn operator_killed_after_each_group_deletion_step_finishes_the_order_without_readmitting_a_device() {
    let steps = [
        "egrp-after-group-disabled",
        "egrp-after-devices-page",
        "egrp-after-devices-revoked",
        "egrp-after-registrations-deleted",
        "egrp-after-group-removed",
    ];
    let mut bed = Bed::start_with("egrp-crash", &[("DPS_OPERATOR_FAILPOINT", steps[0])]).await;
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group("fleet-d", generated_keys("fleet-d-keys"), json!({})))
        .await
        .expect("created");
    bed.wait_ready::<EnrollmentGroup>("fleet-d").await;
    let key = group_key(&bed, "fleet-d-keys").await;
    let ids: Vec<String> = (1..=3).map(|i| format!("fleet-d-{i}")).collect();
    let devices = register_all(&bed, &key, &ids).await;
    api.delete("fleet-d", &DeleteParams::default()).await.expect("delete accepted");

    let dps = bed.engine.dps();
    for (i, step) in steps.iter().enumerate() {
        let code = bed.operator.wait_for_exit(Duration::from_secs(60)).await;
        assert_eq!(code, Some(86), "the operator should die at {step}");
        // The simulator's view after the kill: no revoked device is admitted.
        for (_, device_id) in &devices {
            let attempt = register(&bed.engine, device_id, with_group_key(&key)).await;
            assert!(
                !matches!(attempt, Registration::Assigned { .. }),
                "{device_id} admitted after {step}: {attempt:?}"
            );
        }
        // Nothing done is undone: the group stays disabled (or gone), revoked devices stay disabled.
        match dps.get_enrollment_group("fleet-d").await {
            Ok(g) => assert_eq!(g.provisioning_status, Some(ProvisioningStatus::Disabled), "after {step}"),
            Err(e) => assert!(e.is_not_found() && i == steps.len() - 1, "group gone too early: {e}"),
        }
        if i >= 1 {
            for (hub, device_id) in &devices {
                assert_eq!(device_status(&bed, hub, device_id).await, Some(DeviceStatus::Disabled), "after {step}");
            }
        }
        let next: Vec<(&str, &str)> =
            steps.get(i + 1).map(|s| vec![("DPS_OPERATOR_FAILPOINT", *s)]).unwrap_or_default();
        bed.operator.restart_with(&next);
    }
    bed.wait_gone::<EnrollmentGroup>("fleet-d").await;
    assert!(dps.get_enrollment_group("fleet-d").await.expect_err("group deleted").is_not_found());
    for (hub, device_id) in &devices {
        assert_eq!(device_status(&bed, hub, device_id).await, Some(DeviceStatus::Disabled));
        assert!(dps.get_registration_state(device_id).await.expect_err("record deleted").is_not_found());
    }
    let reasons = event_reasons(&bed, "EnrollmentGroup", "fleet-d").await;
    let order = only(&reasons, &["GroupDisabled", "HubDevicesDisabled", "RegistrationsDeleted", "GroupDeleted"]);
    assert_eq!(order, ["GroupDisabled", "HubDevicesDisabled", "RegistrationsDeleted", "GroupDeleted"], "{reasons:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_changed_group_id_is_refused_and_the_bound_group_is_kept() {
    let bed = Bed::start("egrp-immutable").await;
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group("fleet-e", generated_keys("fleet-e-keys"), json!({})))
        .await
        .expect("created");
    bed.wait_ready::<EnrollmentGroup>("fleet-e").await;
    // Kubernetes 1.20 does not run the CRD's CEL rule, so only the controller stands in the way.
    let change = json!({ "spec": { "enrollmentGroupId": "fleet-e-renamed" } });
    api.patch("fleet-e", &PatchParams::default(), &Patch::Merge(&change)).await.expect("patched");
    let stalled = bed.wait_condition::<EnrollmentGroup>("fleet-e", "Stalled", "True").await;
    let status = stalled.status.expect("status");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.reason, "ImmutableFieldChanged", "{}", ready.message);
    assert_eq!(status.enrollment_group_id.as_deref(), Some("fleet-e"));
    let dps = bed.engine.dps();
    assert!(dps.get_enrollment_group("fleet-e-renamed").await.expect_err("no second group").is_not_found());
    dps.get_enrollment_group("fleet-e").await.expect("the bound group stays");
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_higher_group_whose_certificate_is_not_visible_is_a_risk_by_issuer_name_and_the_condition_says_so() {
    let bed = Bed::start("egrp-byname").await;
    let root = TestCa::root("Fabrikam Root");
    let intermediate = root.intermediate("Fabrikam Line 2");
    let root_group = wire::EnrollmentGroup {
        enrollment_group_id: "fabrikam-root".into(),
        attestation: wire::AttestationMechanism::x509_signing_certificate(root.cert_pem(), None),
        ..Default::default()
    };
    bed.engine.dps().create_enrollment_group(&root_group).await.expect("root group");
    // Only the intermediate: the root that signed it is not in the source, so no signature can be checked.
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group("line-2", signing_pem(intermediate.cert_pem()), json!({})))
        .await
        .expect("created");
    let risky = bed.wait_condition::<EnrollmentGroup>("line-2", "ReEnrollmentRisk", "True").await;
    let status = risky.status.expect("status");
    assert_eq!(status.re_enrollment_risk, ["fabrikam-root"]);
    let condition = status.conditions.iter().find(|c| c.type_ == "ReEnrollmentRisk").expect("condition");
    assert!(condition.message.contains("fabrikam-root (by issuer name only"), "{}", condition.message);
    bed.ns.delete().await;
}
