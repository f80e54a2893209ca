//! Drift: an entry changed directly in DPS (portal, CLI, another tool) is put back at the next resync, with a
//! Warning event `DriftReverted` naming what changed; an entry that matches is not written at all.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use dps_operator::api::IndividualEnrollment;
use dps_operator::azure::wire::ProvisioningStatus;

use crate::support::eventually;
use crate::support::operator::{Bed, SERVICE};

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
    let events = bed.api::<Event>().list(&ListParams::default()).await.expect("events");
    let drift: Vec<String> = events
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("DriftReverted") && e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.note)
        .collect();
    assert!(drift.iter().any(|n| n.contains("provisioningStatus")), "DriftReverted names what changed: {drift:?}");
    bed.ns.delete().await;
}

/// The log without terminal colour sequences (ESC `[` ... `m`).
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
