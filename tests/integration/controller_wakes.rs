//! What wakes a resource besides a change to its spec: the Secret it reads appearing (one Secret watch for
//! every controller), the ProvisioningService it names appearing (that kind's own watch), and someone
//! taking the operator's finalizer off it. The first two tests let the resources fail six times first
//! (backoff 0.5 s doubling per failure), so their next retry is 16-20 s away and only the wake explains a
//! reconcile within a few seconds; in the third, the next reconcile would be the resync, 10 minutes away.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};

use crate::operator_metrics::{get, sample};
use crate::support::eventually;
use crate::support::operator::{Bed, SERVICE};

/// A reconcile after the wake, well before the next retry (at least 16 s after the sixth failure).
const WITHIN: Duration = Duration::from_secs(8);

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: serde_json::Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec,
    }))
    .expect("a valid object")
}

/// The number of failed reconciles of `controller` for `reason` so far.
async fn failures(address: SocketAddr, controller: &str, reason: &str) -> f64 {
    let series = format!(r#"controller_runtime_reconcile_errors_total{{controller="{controller}",reason="{reason}"}}"#);
    sample(&get(address, "/metrics").await.1, &series).unwrap_or(0.0)
}

/// Waits until `controller` failed `times` times for `reason` (its resources are then backed off).
async fn failed(bed: &Bed, controller: &str, reason: &str, times: f64) {
    let address = bed.operator.metrics_address().await;
    eventually(&format!("{times} failures of {controller} for {reason}"), Duration::from_secs(90), || async move {
        (failures(address, controller, reason).await >= times).then_some(())
    })
    .await;
}

/// The reason of the resource's Ready condition, if it has one.
async fn ready_reason<K>(bed: &Bed, name: &str) -> Option<String>
where
    K: crate::support::Namespaced,
{
    let object = bed.api::<K>().get(name).await.ok()?;
    let value = serde_json::to_value(object).ok()?;
    let conditions = value.pointer("/status/conditions")?.as_array()?.clone();
    conditions.iter().find(|c| c["type"] == "Ready").and_then(|c| c["reason"].as_str()).map(str::to_owned)
}

#[tokio::test]
async fn resources_waiting_for_their_secret_are_reconciled_as_soon_as_it_appears_not_at_their_next_retry() {
    let bed = Bed::start("wake-secret").await;
    let keys = |secret: &str| json!({ "symmetricKey": { "secretName": secret } });
    let spec = |secret: &str| json!({ "provisioningServiceRef": { "name": SERVICE }, "attestation": keys(secret) });
    let enrollment: IndividualEnrollment = object("IndividualEnrollment", "late-key-1", spec("late-keys"));
    let group: EnrollmentGroup = object("EnrollmentGroup", "late-group", spec("late-group-keys"));
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    bed.api::<EnrollmentGroup>().create(&PostParams::default(), &group).await.expect("created");
    failed(&bed, "individualenrollment", "SecretNotFound", 6.0).await;
    failed(&bed, "enrollmentgroup", "SecretNotFound", 6.0).await;

    let key = "c2VjcmV0LWtleS1mb3ItbGF0ZS1rZXlzLTAxMjM0NTY3ODk=";
    for name in ["late-keys", "late-group-keys"] {
        let secret = Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            string_data: Some([("primaryKey", key), ("secondaryKey", key)].map(|(k, v)| (k.into(), v.into())).into()),
            ..Secret::default()
        };
        bed.api::<Secret>().create(&PostParams::default(), &secret).await.expect("Secret created");
    }
    eventually("both past SecretNotFound within 8 s of their Secrets", WITHIN, || async {
        let enrollment = ready_reason::<IndividualEnrollment>(&bed, "late-key-1").await;
        let group = ready_reason::<EnrollmentGroup>(&bed, "late-group").await;
        let past = |reason: Option<String>| reason.is_some_and(|r| r != "SecretNotFound");
        (past(enrollment) && past(group)).then_some(())
    })
    .await;
    bed.wait_ready::<IndividualEnrollment>("late-key-1").await;
    bed.wait_ready::<EnrollmentGroup>("late-group").await;
    bed.ns.delete().await;
}

#[tokio::test]
async fn resources_naming_a_missing_service_are_reconciled_as_soon_as_it_is_created_not_at_their_next_retry() {
    let bed = Bed::start("wake-service").await;
    let late = "late-dps";
    let keys = |secret: &str| json!({ "symmetricKey": { "secretName": secret, "generate": true } });
    let spec = |secret: &str| json!({ "provisioningServiceRef": { "name": late }, "attestation": keys(secret) });
    let enrollment: IndividualEnrollment = object("IndividualEnrollment", "waits-1", spec("waits-1-keys"));
    let group: EnrollmentGroup = object("EnrollmentGroup", "waits-group", spec("waits-group-keys"));
    let order = json!({ "provisioningServiceRef": { "name": late }, "registrationId": "stolen-9", "reason": "stolen" });
    let deprovision: DeviceDeprovision = object("DeviceDeprovision", "stolen-9", order);
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    bed.api::<EnrollmentGroup>().create(&PostParams::default(), &group).await.expect("created");
    bed.api::<DeviceDeprovision>().create(&PostParams::default(), &deprovision).await.expect("created");
    for controller in ["individualenrollment", "enrollmentgroup", "devicedeprovision"] {
        failed(&bed, controller, "ProvisioningServiceNotFound", 6.0).await;
    }

    // The same DPS and hubs as the test bed's service, under the name the resources wait for.
    let existing = bed.api::<ProvisioningService>().get(SERVICE).await.expect("the bed's service");
    let service = ProvisioningService {
        metadata: ObjectMeta { name: Some(late.into()), ..ObjectMeta::default() },
        spec: existing.spec.clone(),
        status: None,
    };
    bed.api::<ProvisioningService>().create(&PostParams::default(), &service).await.expect("created");
    bed.wait_ready::<ProvisioningService>(late).await;
    eventually("every dependent past ProvisioningServiceNotFound within 8 s of the service", WITHIN, || async {
        let reasons = [
            ready_reason::<IndividualEnrollment>(&bed, "waits-1").await,
            ready_reason::<EnrollmentGroup>(&bed, "waits-group").await,
            ready_reason::<DeviceDeprovision>(&bed, "stolen-9").await,
        ];
        reasons
            .iter()
            .all(|r| !matches!(r.as_deref(), Some("ProvisioningServiceNotFound" | "ProvisioningServiceNotReady")))
            .then_some(())
    })
    .await;
    bed.wait_ready::<IndividualEnrollment>("waits-1").await;
    bed.wait_ready::<EnrollmentGroup>("waits-group").await;
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_finalizer_taken_off_a_live_enrollment_is_put_back_at_once_not_at_the_next_resync() {
    let bed = Bed::start("wake-finalizer").await;
    let keys = json!({ "symmetricKey": { "secretName": "kiosk-keys", "generate": true } });
    let spec = json!({ "provisioningServiceRef": { "name": SERVICE }, "attestation": keys });
    let enrollment: IndividualEnrollment = object("IndividualEnrollment", "kiosk-1", spec);
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &enrollment).await.expect("created");
    let ready = bed.wait_ready::<IndividualEnrollment>("kiosk-1").await;
    assert_eq!(ready.metadata.finalizers.as_deref(), Some(&[dps_operator::controller::FINALIZER.to_string()][..]));

    // As a person (or a tool pruning fields it does not know) might: the resource could then be deleted
    // without its revocation.
    let stripped = json!([
        { "op": "test", "path": "/metadata/finalizers", "value": [dps_operator::controller::FINALIZER] },
        { "op": "remove", "path": "/metadata/finalizers" },
    ]);
    let patch = Patch::Json::<()>(serde_json::from_value(stripped).expect("a JSON patch"));
    api.patch("kiosk-1", &PatchParams::default(), &patch).await.expect("finalizer removed");
    eventually("the finalizer back within 8 s", WITHIN, || async {
        let now = api.get("kiosk-1").await.ok()?;
        now.metadata
            .finalizers
            .is_some_and(|f| f.iter().any(|f| f == dps_operator::controller::FINALIZER))
            .then_some(())
    })
    .await;
    bed.ns.delete().await;
}
