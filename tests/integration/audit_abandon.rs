//! `dps-operator audit` against a real namespace and engine, and the abandon annotation releasing
//! resources whose DPS instance is gone.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use dps_operator::api::{IndividualEnrollment, ProvisioningService};
use dps_operator::azure::wire;
use dps_operator::controller::abandon::{ABANDON, ABANDONED_BY};
use dps_operator::controller::references::SECRET_FINALIZER;

use crate::support::device::{Registration, register, with_key};
use crate::support::eventually;
use crate::support::kubeconfig_path;
use crate::support::operator::{Bed, SERVICE};

/// A symmetric-key enrollment whose keys DPS generates into `<name>-keys`.
fn enrollment(name: &str) -> IndividualEnrollment {
    crate::controller_individual::symmetric_enrollment(name, &format!("{name}-keys"), true, json!({}))
}

async fn primary_key(bed: &Bed, secret: &str) -> String {
    let secret = bed.api::<Secret>().get(secret).await.expect("the key Secret exists");
    String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key")
}

fn audit(namespace: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_dps-operator"))
        .args(["audit", "--provisioning-service", SERVICE, "-n", namespace, "--output", "json"])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("the audit runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "audit failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("the audit prints a JSON array")
}

#[tokio::test]
async fn audit_reports_exactly_the_unowned_entry_the_unowned_device_and_the_missing_entry() {
    let bed = Bed::start("audit").await;
    for name in ["owned-1", "doomed-1"] {
        bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment(name)).await.expect("created");
    }
    bed.wait_ready::<IndividualEnrollment>("owned-1").await;
    bed.wait_ready::<IndividualEnrollment>("doomed-1").await;
    // The owned entry's device is in a hub: owned through its entry, so never reported.
    let key = primary_key(&bed, "owned-1-keys").await;
    let registration = register(&bed.engine, "owned-1", with_key(&key)).await;
    assert!(matches!(registration, Registration::Assigned { .. }), "{registration:?}");

    let Bed { engine, ns, operator, .. } = bed;
    // Without the operator nothing puts the deleted entry back before the audit looks.
    drop(operator);
    let dps = engine.dps();
    let stray = wire::IndividualEnrollment {
        registration_id: "stray-1".into(),
        attestation: wire::AttestationMechanism::symmetric_key(None, None),
        ..Default::default()
    };
    dps.create_enrollment(&stray).await.expect("an entry made outside Kubernetes");
    let hub = engine.hub(0);
    hub.create_device(&wire::Device { device_id: "loose-1".into(), ..Default::default() })
        .await
        .expect("a device made outside Kubernetes");
    dps.delete_enrollment("doomed-1", None).await.expect("the entry deleted outside Kubernetes");

    let findings = audit(&ns.name);
    let hub_name = hub.host_name().to_string();
    assert_eq!(
        findings,
        vec![
            json!({"kind": "enrollment", "id": "doomed-1", "finding": "Missing", "resource": "IndividualEnrollment/doomed-1"}),
            json!({"kind": "enrollment", "id": "stray-1", "finding": "Unowned"}),
            json!({"kind": "device", "id": "loose-1", "hub": hub_name, "finding": "Unowned"}),
        ],
        "{findings:#?}"
    );
    ns.delete().await;
}

/// Warning events on `name` of `kind`: (reason, note).
async fn warnings(bed: &Bed, kind: &str, name: &str) -> Vec<(String, String)> {
    let events = bed.api::<Event>().list(&ListParams::default()).await.expect("events list");
    events
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(name) && r.kind.as_deref() == Some(kind))
        })
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Deletes `name` and waits until its cleanup has failed at least once (it stays, with a Warning).
async fn delete_and_see_it_stall<K>(bed: &Bed, name: &str)
where
    K: crate::support::Namespaced,
{
    let api = bed.api::<K>();
    api.delete(name, &DeleteParams::default()).await.expect("deletion requested");
    let kind = K::kind(&()).to_string();
    eventually(&format!("{kind} {name} to stall in deletion"), Duration::from_secs(60), || async {
        let stalled = api.get_opt(name).await.ok().flatten().is_some_and(|o| o.meta().deletion_timestamp.is_some())
            && !warnings(bed, &kind, name).await.is_empty();
        stalled.then_some(())
    })
    .await;
}

async fn annotate<K>(bed: &Bed, name: &str, annotations: Value)
where
    K: crate::support::Namespaced,
{
    let params = PatchParams { field_manager: Some("kubectl-annotate".into()), ..Default::default() };
    bed.api::<K>()
        .patch(name, &params, &Patch::Merge(json!({"metadata": {"annotations": annotations}})))
        .await
        .expect("annotated");
}

async fn abandoned_note(bed: &Bed, kind: &str, name: &str) -> String {
    eventually(&format!("an Abandoned event on {kind} {name}"), Duration::from_secs(30), || async {
        warnings(bed, kind, name).await.into_iter().find(|(reason, _)| reason == "Abandoned").map(|(_, note)| note)
    })
    .await
}

#[tokio::test]
async fn an_enrollment_whose_dps_is_gone_is_released_by_the_abandon_annotation_with_a_warning() {
    let mut bed = Bed::start("abandon-ie").await;
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment("orphan-1")).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("orphan-1").await;
    bed.engine.stop();
    delete_and_see_it_stall::<IndividualEnrollment>(&bed, "orphan-1").await;
    let held = bed.api::<IndividualEnrollment>().get("orphan-1").await.expect("still there");
    assert!(held.finalizers().iter().any(|f| f == dps_operator::controller::FINALIZER), "finalizer kept");

    annotate::<IndividualEnrollment>(&bed, "orphan-1", json!({ ABANDON: "the DPS instance was deleted in INC-42" }))
        .await;
    bed.wait_gone::<IndividualEnrollment>("orphan-1").await;
    let note = abandoned_note(&bed, "IndividualEnrollment", "orphan-1").await;
    assert!(note.contains("the DPS instance was deleted in INC-42"), "{note}");
    assert!(note.contains("field manager kubectl-annotate"), "{note}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_provisioning_service_waiting_for_its_dependents_can_be_abandoned_too() {
    let mut bed = Bed::start("abandon-ps").await;
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment("orphan-2")).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("orphan-2").await;
    bed.engine.stop();
    delete_and_see_it_stall::<IndividualEnrollment>(&bed, "orphan-2").await;
    bed.api::<ProvisioningService>().delete(SERVICE, &DeleteParams::default()).await.expect("deletion requested");
    bed.wait_condition::<ProvisioningService>(SERVICE, "Reconciling", "True").await;

    annotate::<ProvisioningService>(&bed, SERVICE, json!({ ABANDON: "subscription cancelled", ABANDONED_BY: "alice" }))
        .await;
    bed.wait_gone::<ProvisioningService>(SERVICE).await;
    let note = abandoned_note(&bed, "ProvisioningService", SERVICE).await;
    assert!(note.contains("subscription cancelled") && note.contains("alice"), "{note}");
    // Abandoned, the service no longer keeps its credential Secrets.
    let secrets = bed.api::<Secret>().list(&ListParams::default()).await.expect("secrets");
    assert!(
        secrets.iter().all(|s| !s.finalizers().iter().any(|f| f == SECRET_FINALIZER)),
        "no Secret keeps the in-use finalizer"
    );

    annotate::<IndividualEnrollment>(&bed, "orphan-2", json!({ ABANDON: "subscription cancelled" })).await;
    bed.wait_gone::<IndividualEnrollment>("orphan-2").await;
    bed.ns.delete().await;
}
