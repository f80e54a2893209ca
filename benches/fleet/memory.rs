//! The operator's resident memory with `n` objects of each of the four kinds watched. The objects name a
//! ProvisioningService (and Secrets) that do not exist, so every one is reconciled to a Stalled status
//! without backend calls: what is measured is the operator holding and reconciling them.

use std::time::{Duration, Instant};

use kube::api::Api;
use serde_json::json;

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};

use crate::figures::{Figures, seconds};
use crate::support::engine::free_port;
use crate::support::operator::Operator;
use crate::support::{TestNamespace, client, ensure_crds};
use crate::watch::{create_all, memory_mib, metric};

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: serde_json::Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": kind,
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("a valid object")
}

pub async fn run(n: usize, deadline: Duration, figures: &mut Figures) {
    let client = client().await;
    ensure_crds(&client).await;
    let ns = TestNamespace::create(&client, "fleet-memory").await;
    let services = Api::<ProvisioningService>::namespaced(client.clone(), &ns.name);
    let enrollments = Api::<IndividualEnrollment>::namespaced(client.clone(), &ns.name);
    let groups = Api::<EnrollmentGroup>::namespaced(client.clone(), &ns.name);
    let deprovisions = Api::<DeviceDeprovision>::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    let missing = json!({ "name": "no-such-dps" });
    create_all(
        &services,
        (0..n)
            .map(|i| {
                let secret = json!({ "name": format!("dps-{i:05}-connection"), "key": "connectionString" });
                object("ProvisioningService", &format!("dps-{i:05}"), json!({ "connectionStringSecretRef": secret }))
            })
            .collect(),
    )
    .await;
    create_all(
        &enrollments,
        (0..n)
            .map(|i| {
                let attestation =
                    json!({ "symmetricKey": { "secretName": format!("dev-{i:05}-keys"), "generate": true } });
                let spec = json!({ "provisioningServiceRef": missing, "attestation": attestation });
                object("IndividualEnrollment", &format!("dev-{i:05}"), spec)
            })
            .collect(),
    )
    .await;
    create_all(
        &groups,
        (0..n)
            .map(|i| {
                let attestation =
                    json!({ "symmetricKey": { "secretName": format!("grp-{i:05}-keys"), "generate": true } });
                let spec = json!({ "provisioningServiceRef": missing, "attestation": attestation });
                object("EnrollmentGroup", &format!("grp-{i:05}"), spec)
            })
            .collect(),
    )
    .await;
    create_all(
        &deprovisions,
        (0..n)
            .map(|i| {
                let spec = json!({ "provisioningServiceRef": missing, "registrationId": format!("gone-{i:05}"), "reason": "benchmark" });
                object("DeviceDeprovision", &format!("gone-{i:05}"), spec)
            })
            .collect(),
    )
    .await;
    figures.add(&format!("create {n} objects of each kind"), seconds(started.elapsed()), "");

    let port = free_port();
    let env = crate::operator_env(port);
    let operator = Operator::start_replica(&ns.name, "fleet-memory", &[], &crate::borrowed(&env));
    let pid = operator.pid().expect("operator runs");
    let started = Instant::now();
    // Every object reconciled at least once (they stall, and retry with backoff, so "observed" is the
    // controllers' count, not a status that settles).
    for controller in ["provisioningservice", "individualenrollment", "enrollmentgroup", "devicedeprovision"] {
        let label = format!("controller=\"{controller}\"");
        while metric(port, "controller_runtime_reconcile_total", &[label.as_str()]).await < n as f64 {
            assert!(started.elapsed() < deadline, "{controller}: not every object reconciled within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    figures.add(
        &format!("operator start -> each of the {} objects reconciled once", 4 * n),
        seconds(started.elapsed()),
        "",
    );
    let (rss, peak, file) = memory_mib(pid);
    figures.add(&format!("operator resident memory, {n} of each kind watched"), format!("{rss:.1} MiB"), "<= 64 MiB");
    figures.add("of which mapped from files (the binary's code and data)", format!("{file:.1} MiB"), "");
    figures.add("operator peak resident memory while reconciling them", format!("{peak:.1} MiB"), "");
    drop(operator);
    ns.delete().await;
}
