//! Ownership of DPS groups: an existing group is adopted only when asked, the newer of two resources naming
//! one group ID is refused, and a group changed behind the operator's back is put back with `DriftReverted`.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::EnrollmentGroup;
use dps_operator::api::individual_enrollment::EntryOwnership;
use dps_operator::azure::wire::{self, AttestationMechanism, ProvisioningStatus};

use crate::controller_group::{generated_keys, group};
use crate::controller_inputs::stalled_reason;
use crate::support::eventually;
use crate::support::operator::Bed;

#[tokio::test]
async fn an_existing_group_is_refused_with_conflict_until_the_resource_adopts_it() {
    let bed = Bed::start("egrp-adopt").await;
    let dps = bed.engine.dps();
    let existing = wire::EnrollmentGroup {
        enrollment_group_id: "legacy-fleet".into(),
        attestation: AttestationMechanism::symmetric_key(None, None),
        ..Default::default()
    };
    let before = dps.create_enrollment_group(&existing).await.expect("group made outside Kubernetes");
    let api = bed.api::<EnrollmentGroup>();
    let wanted =
        group("legacy-fleet", generated_keys("legacy-fleet-keys"), json!({ "provisioningStatus": "Disabled" }));
    api.create(&PostParams::default(), &wanted).await.expect("created");
    let (reason, message) = stalled_reason::<EnrollmentGroup>(&bed, "legacy-fleet").await;
    assert_eq!(reason, "Conflict", "{message}");
    assert!(message.contains("dps.iot-operator.dev/adopt"), "{message}");
    let untouched = dps.get_enrollment_group("legacy-fleet").await.expect("group");
    assert_eq!(untouched.etag, before.etag, "nothing was written to a group we do not own");

    let adopt = json!({"metadata": {"annotations": {"dps.iot-operator.dev/adopt": "true"}}});
    api.patch("legacy-fleet", &PatchParams::default(), &Patch::Merge(adopt)).await.expect("annotated");
    let ready = bed.wait_ready::<EnrollmentGroup>("legacy-fleet").await;
    assert_eq!(ready.status.expect("status").ownership, Some(EntryOwnership::Adopted));
    let adopted = dps.get_enrollment_group("legacy-fleet").await.expect("group");
    assert_eq!(adopted.provisioning_status, Some(ProvisioningStatus::Disabled), "the spec now rules the group");
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_group_the_operator_created_records_ownership_created() {
    let bed = Bed::start("egrp-created").await;
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group("new-fleet", generated_keys("new-fleet-keys"), json!({})))
        .await
        .expect("created");
    let ready = bed.wait_ready::<EnrollmentGroup>("new-fleet").await;
    assert_eq!(ready.status.expect("status").ownership, Some(EntryOwnership::Created));
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_second_group_resource_for_the_same_group_id_is_refused() {
    let bed = Bed::start("egrp-twice").await;
    let api = bed.api::<EnrollmentGroup>();
    let same_id = json!({ "enrollmentGroupId": "shared-fleet" });
    api.create(&PostParams::default(), &group("first", generated_keys("first-keys"), same_id.clone()))
        .await
        .expect("created");
    bed.wait_ready::<EnrollmentGroup>("first").await;
    api.create(&PostParams::default(), &group("second", generated_keys("second-keys"), same_id))
        .await
        .expect("created");
    let (reason, message) = stalled_reason::<EnrollmentGroup>(&bed, "second").await;
    assert_eq!(reason, "EnrollmentGroupIdConflict", "{message}");
    assert!(message.contains("first"), "{message}");
    bed.wait_ready::<EnrollmentGroup>("first").await;
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_group_re_enabled_behind_the_operators_back_is_disabled_again_with_drift_reverted() {
    let bed = Bed::start_with("egrp-drift", &[("DPS_OPERATOR_RESYNC_SECONDS", "2")]).await;
    let api = bed.api::<EnrollmentGroup>();
    let wanted = group("kiosks", generated_keys("kiosks-keys"), json!({ "provisioningStatus": "Disabled" }));
    api.create(&PostParams::default(), &wanted).await.expect("created");
    bed.wait_ready::<EnrollmentGroup>("kiosks").await;
    let dps = bed.engine.dps();
    let held = dps.get_enrollment_group("kiosks").await.expect("group");
    let mut changed = held.clone();
    changed.provisioning_status = Some(ProvisioningStatus::Enabled);
    changed.attestation = dps.enrollment_group_attestation("kiosks").await.expect("keys");
    dps.update_enrollment_group(&changed, held.etag.as_deref()).await.expect("changed outside Kubernetes");

    eventually("the group to be disabled again", Duration::from_secs(30), || {
        let dps = dps.clone();
        async move {
            let held = dps.get_enrollment_group("kiosks").await.ok()?;
            (held.provisioning_status == Some(ProvisioningStatus::Disabled)).then_some(())
        }
    })
    .await;
    let drift = eventually("a DriftReverted event", Duration::from_secs(10), || {
        let events = bed.api::<Event>();
        async move {
            let notes: Vec<String> = events
                .list(&ListParams::default())
                .await
                .ok()?
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("DriftReverted") && e.type_.as_deref() == Some("Warning"))
                .filter_map(|e| e.note)
                .collect();
            (!notes.is_empty()).then_some(notes)
        }
    })
    .await;
    assert!(drift.iter().any(|n| n.contains("provisioningStatus") && n.contains("kiosks")), "{drift:?}");
    bed.ns.delete().await;
}
