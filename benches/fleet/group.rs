//! An EnrollmentGroup with many registered devices deleted with `devices: Disable`: the registry calls it
//! takes and its wall time, without a quota and then at Azure's S1 registry budget (100 operations a
//! minute per hub, a bulk call counting once per device) against the time that budget predicts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::{EnrollmentGroup, ProvisioningService};

use crate::figures::{Figures, seconds};
use crate::support::device::{Registration, register, with_group_key};
use crate::support::engine::free_port;
use crate::support::operator::Bed;
use crate::support::operator::SERVICE;
use crate::watch::calls;

/// Devices registering at once.
const REGISTERING: usize = 32;
/// Azure's identity-registry operations a minute per S1 hub unit.
const S1_PER_MINUTE: f64 = 100.0;

pub async fn run(devices: usize, budget_devices: usize, deadline: Duration, figures: &mut Figures) {
    let env = crate::operator_env(free_port());
    let bed = Bed::start_with_args("fleet-group", &[], &crate::borrowed(&env)).await;

    set_limits(&bed, 1_000_000, 1_000_000).await;
    let (took, registry, _) = delete_group(&bed, "fleet", devices, deadline, figures).await;
    figures.add(
        &format!("group of {devices} devices deleted (devices: Disable): registry calls (bulk, 100 devices a call)"),
        registry,
        "<= 101",
    );
    figures.add(&format!("group of {devices} devices deleted: wall time, no quota"), seconds(took), "");

    set_limits(&bed, 1_000, 100).await;
    let (took, registry, hubs) = delete_group(&bed, "budget", budget_devices, deadline, figures).await;
    // Disabling costs one operation per device (its bulk item: the client charges bulk calls item by item).
    // Each hub's bucket starts full (one minute of operations), then refills at the per-minute rate; the
    // hubs' budgets are separate, so the slowest hub decides.
    let predicted =
        hubs.values().map(|&n| ((n as f64 - S1_PER_MINUTE).max(0.0) / S1_PER_MINUTE) * 60.0).fold(0.0, f64::max);
    figures.add(
        &format!("group of {budget_devices} devices at the S1 budget: registry calls"),
        registry,
        "<= 101 for 10,000 devices",
    );
    figures.add(
        &format!(
            "group of {budget_devices} devices at the S1 budget: wall time (devices per hub {:?})",
            hubs.values().collect::<Vec<_>>()
        ),
        seconds(took),
        &format!("budget predicts {predicted:.1} s"),
    );
    bed.ns.delete().await;
}

async fn set_limits(bed: &Bed, service: u32, registry: u32) {
    let limits = json!({"spec": {"rateLimits": {"serviceOperationsPerMinute": service, "registryOperationsPerMinute": registry}}});
    bed.api::<ProvisioningService>()
        .patch(SERVICE, &PatchParams::default(), &Patch::Merge(limits))
        .await
        .expect("limits");
    bed.wait_ready::<ProvisioningService>(SERVICE).await;
}

/// Creates group `name`, registers `devices` devices through it, deletes it and waits until it is gone.
/// Returns the deletion's wall time, the registry calls it made, and the devices per hub.
async fn delete_group(
    bed: &Bed,
    name: &str,
    devices: usize,
    deadline: Duration,
    figures: &mut Figures,
) -> (Duration, usize, BTreeMap<String, usize>) {
    let api = bed.api::<EnrollmentGroup>();
    let group: EnrollmentGroup = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "EnrollmentGroup",
        "metadata": { "name": name },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": format!("{name}-keys"), "generate": true } },
            "onDelete": { "devices": "Disable" },
        }
    }))
    .expect("EnrollmentGroup");
    api.create(&PostParams::default(), &group).await.expect("group created");
    bed.wait_ready::<EnrollmentGroup>(name).await;
    let secret = bed.api::<Secret>().get(&format!("{name}-keys")).await.expect("group keys");
    let key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key");

    let started = Instant::now();
    let hubs: Vec<String> = futures::stream::iter(0..devices)
        .map(|i| {
            let key = key.clone();
            async move {
                let id = format!("{name}-device-{i:05}");
                match register(&bed.engine, &id, with_group_key(&key)).await {
                    Registration::Assigned { hub, .. } => hub,
                    other => panic!("{id} was refused: {other:?}"),
                }
            }
        })
        .buffer_unordered(REGISTERING)
        .collect()
        .await;
    figures.add(&format!("{devices} devices registered through group {name}"), seconds(started.elapsed()), "");
    let mut per_hub = BTreeMap::new();
    for hub in hubs {
        *per_hub.entry(hub).or_insert(0) += 1;
    }

    let mark = bed.engine.log().len();
    let started = Instant::now();
    api.delete(name, &DeleteParams::default()).await.expect("delete accepted");
    loop {
        if matches!(api.get_opt(name).await, Ok(None)) {
            break;
        }
        assert!(started.elapsed() < deadline, "group {name} was not deleted within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    let host = bed.engine.info.provisioning_service.host_name.clone();
    let made = calls(&bed.engine.log(), mark, &host);
    (took, made.registry_reads + made.registry_writes, per_hub)
}
