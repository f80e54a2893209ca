//! Observability of the running operator: Prometheus metrics with bounded labels, the kubelet's probes, and
//! JSON logs carrying the object and registration ID of the reconcile they come from.

use std::net::SocketAddr;
use std::time::Duration;

use kube::api::PostParams;
use serde_json::json;

use dps_operator::api::IndividualEnrollment;

use crate::support::eventually;
use crate::support::operator::{Bed, SERVICE};

pub(crate) async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let answer = reqwest::get(format!("http://{address}{path}")).await.expect("the metrics server answers");
    let status = answer.status().as_u16();
    (status, answer.text().await.expect("a text body"))
}

/// The value of the sample whose series (name and labels) is exactly `series`.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every label value in the exposition.
fn label_values(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| Some(line.split_once('{')?.1.rsplit_once('}')?.0.to_owned()))
        .flat_map(|labels| {
            labels
                .split("\",")
                .filter_map(|pair| pair.split_once("=\""))
                .map(|(_, v)| v.trim_end_matches('"').to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_reconciles_and_backend_calls_without_naming_any_object() {
    let bed = Bed::start_with("obs", &[("DPS_OPERATOR_LOG_FORMAT", "json")]).await;
    let enrollment: IndividualEnrollment = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": "metered-sensor-7" },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": "metered-sensor-7-keys", "generate": true } },
        }
    }))
    .expect("a valid IndividualEnrollment");
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("metered-sensor-7").await;

    let address = bed.operator.metrics_address().await;
    assert_eq!(get(address, "/healthz").await.0, 200);
    assert_eq!(get(address, "/readyz").await.0, 200);
    let (status, text) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    let succeeded =
        sample(&text, r#"controller_runtime_reconcile_total{controller="individualenrollment",result="success"}"#);
    assert!(succeeded.is_some_and(|n| n > 0.0), "no successful IndividualEnrollment reconcile counted:\n{text}");
    let enrollment_calls: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(r#"dps_operator_backend_requests_total{operation="PUT /enrollments/{id}",status=""#))
        .collect();
    assert!(
        enrollment_calls.iter().any(|l| l.contains(r#"status="200""#)),
        "no answered PUT of an enrollment counted:\n{text}"
    );
    let budgeted = sample(&text, "dps_operator_rate_budget_wait_seconds_count");
    assert!(budgeted.is_some_and(|n| n > 0.0), "no request went through the rate budget:\n{text}");

    for value in label_values(&text) {
        for name in ["metered-sensor-7", bed.ns.name.as_str(), SERVICE] {
            assert!(!value.contains(name), "label value {value:?} names {name}:\n{text}");
        }
    }

    // A finished deletion leaves nothing in progress.
    bed.api::<IndividualEnrollment>().delete("metered-sensor-7", &Default::default()).await.expect("deleted");
    bed.wait_gone::<IndividualEnrollment>("metered-sensor-7").await;
    // The object is gone as soon as its finalizer is released, a moment before the reconcile that released
    // it records its end.
    let series = r#"dps_operator_deletions_in_progress{controller="individualenrollment"}"#;
    eventually("no deletion left in progress", Duration::from_secs(20), || async {
        (sample(&get(address, "/metrics").await.1, series) == Some(0.0)).then_some(())
    })
    .await;
    bed.ns.delete().await;
}

#[tokio::test]
async fn json_logs_of_a_reconcile_carry_the_object_and_its_registration_id() {
    let bed = Bed::start_with("obs-log", &[("DPS_OPERATOR_LOG_FORMAT", "json")]).await;
    let enrollment: IndividualEnrollment = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": "logged-sensor" },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "registrationId": "logged-sensor-reg",
            "attestation": { "symmetricKey": { "secretName": "logged-sensor-keys", "generate": true } },
        }
    }))
    .expect("a valid IndividualEnrollment");
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("logged-sensor").await;

    let log = bed.operator.log();
    let object = format!("IndividualEnrollment/{}/logged-sensor", bed.ns.name);
    let in_span = log.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).any(|line| {
        line["span"]["name"] == "reconcile"
            && line["span"]["controller"] == "individualenrollment"
            && line["span"]["object"] == object.as_str()
            && line["span"]["registration_id"] == "logged-sensor-reg"
    });
    assert!(in_span, "no JSON log line inside the reconcile span of {object}:\n{log}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn stalled_resources_are_counted_while_their_status_says_so() {
    let bed = Bed::start("obs-stalled").await;
    let enrollment: IndividualEnrollment = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": "keyless-sensor" },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": "no-such-secret" } },
        }
    }))
    .expect("a valid IndividualEnrollment");
    bed.api::<IndividualEnrollment>().create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_condition::<IndividualEnrollment>("keyless-sensor", "Stalled", "True").await;
    let address = bed.operator.metrics_address().await;
    let series = r#"dps_operator_resources_stalled{kind="individualenrollment"}"#;
    let stalled_count = || async { sample(&get(address, "/metrics").await.1, series) };
    eventually("one Stalled IndividualEnrollment counted", Duration::from_secs(20), || async {
        (stalled_count().await == Some(1.0)).then_some(())
    })
    .await;

    bed.api::<IndividualEnrollment>().delete("keyless-sensor", &Default::default()).await.expect("deleted");
    bed.wait_gone::<IndividualEnrollment>("keyless-sensor").await;
    eventually("no Stalled IndividualEnrollment counted", Duration::from_secs(20), || async {
        (stalled_count().await == Some(0.0)).then_some(())
    })
    .await;
    bed.ns.delete().await;
}

/// The service's own retries back off (0.5 s doubling per failure); the last dependent going must end its
/// wait at once, not at its next retry.
#[tokio::test]
async fn a_deleting_service_goes_as_soon_as_its_last_dependent_is_gone_not_at_its_next_retry() {
    let bed = Bed::start("dependents-gone").await;
    let enrollment: IndividualEnrollment = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": "last-user-3" },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": "last-user-3-keys", "generate": true } },
        }
    }))
    .expect("a valid IndividualEnrollment");
    let enrollments = bed.api::<IndividualEnrollment>();
    enrollments.create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>("last-user-3").await;
    let services = bed.api::<dps_operator::api::ProvisioningService>();
    services.delete(SERVICE, &Default::default()).await.expect("deletion requested");

    // Five failed waits: the next retry is 16-20 s away.
    let address = bed.operator.metrics_address().await;
    let series =
        r#"controller_runtime_reconcile_errors_total{controller="provisioningservice",reason="DependentsExist"}"#;
    eventually("five retries of the waiting service", Duration::from_secs(60), || async move {
        (sample(&get(address, "/metrics").await.1, series)? >= 5.0).then_some(())
    })
    .await;
    enrollments.delete("last-user-3", &Default::default()).await.expect("deletion requested");
    eventually("the service gone within 8 s of its last dependent", Duration::from_secs(8), || {
        let services = services.clone();
        let enrollments = enrollments.clone();
        async move {
            let service_gone = matches!(services.get_opt(SERVICE).await, Ok(None));
            let dependent_gone = matches!(enrollments.get_opt("last-user-3").await, Ok(None));
            (service_gone && dependent_gone).then_some(())
        }
    })
    .await;
    bed.ns.delete().await;
}
