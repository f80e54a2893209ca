//! The controllers under engine faults: for each fault mix (errors, 429 with Retry-After, latency, drops
//! before apply, drops after apply, all of them), an individual enrollment is created, disabled and deleted,
//! a group with devices is deleted (devices Disable), and a device is deprovisioned to Completed, all at
//! once. Each must converge within its deadline, and no revoked device may register again.
//!
//! Faults hit the APIs the operator calls (DPS service, hub registry); devices register unfaulted, so a
//! refusal is the engine's decision and not an injected error. `DPS_SEED` replays a run's draws.

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment};
use dps_operator::azure::secret::Secret;
use dps_operator::azure::wire::{self, AttestationMechanism, DeviceStatus, ProvisioningStatus};

use crate::controller_group::{generated_keys, group};
use crate::controller_individual::{primary_key, symmetric_enrollment};
use crate::support::device::{Registration, register, with_group_key, with_key};
use crate::support::faults;
use crate::support::operator::{Bed, SERVICE};

const GROUP_KEY: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

/// A fault mix: its name and the rules for the two APIs the operator calls.
pub struct Mix {
    /// Short name, used in resource names.
    pub name: &'static str,
    /// `/engine/faults` rules.
    pub rules: Value,
}

fn both(rule: Value) -> Value {
    let mut dps = rule.clone();
    let mut hub = rule;
    dps["api"] = json!("dps-service");
    hub["api"] = json!("hub-registry");
    json!([dps, hub])
}

/// The fault mixes every scenario runs under.
pub fn mixes() -> Vec<Mix> {
    vec![
        Mix { name: "errors", rules: both(json!({ "errorRate": 0.2, "status": 500 })) },
        Mix { name: "throttled", rules: both(json!({ "errorRate": 0.2, "status": 429, "retryAfterSeconds": 1 })) },
        Mix { name: "latency", rules: both(json!({ "latencyMs": 200 })) },
        Mix { name: "drops-before", rules: both(json!({ "dropRate": 0.15 })) },
        Mix { name: "drops-after", rules: both(json!({ "dropAfterApplyRate": 0.15 })) },
        Mix {
            name: "mixed",
            rules: json!([
                { "api": "dps-service", "errorRate": 0.1, "status": 503, "dropRate": 0.05, "dropAfterApplyRate": 0.05, "latencyMs": 50 },
                { "api": "hub-registry", "errorRate": 0.1, "status": 429, "retryAfterSeconds": 1, "dropRate": 0.05, "dropAfterApplyRate": 0.05, "latencyMs": 50 },
            ]),
        },
    ]
}

/// The seed of this run: `DPS_SEED`, or the clock; printed so a failure can be replayed.
pub fn seed() -> u64 {
    std::env::var("DPS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1)
    })
}

/// A symmetric-key group created directly in the engine, for the deprovision scenario.
async fn key_group(bed: &Bed, id: &str) {
    let group = wire::EnrollmentGroup {
        enrollment_group_id: id.into(),
        attestation: AttestationMechanism::symmetric_key(Some(Secret::new(GROUP_KEY.to_string())), None),
        ..wire::EnrollmentGroup::default()
    };
    bed.engine.dps().create_enrollment_group(&group).await.expect("group enrolled");
}

fn assigned(registration: Registration, who: &str) -> (String, String) {
    match registration {
        Registration::Assigned { hub, device_id } => (hub, device_id),
        other => panic!("{who} was refused: {other:?}"),
    }
}

fn hub_index(bed: &Bed, hub: &str) -> usize {
    bed.engine.info.hubs.iter().position(|h| h.host_name.eq_ignore_ascii_case(hub)).expect("a known hub")
}

/// Created, disabled in the spec, deleted; the device is refused from the disable on.
async fn individual(bed: &Bed, mix: &str) -> (String, String) {
    let name = format!("ienr-{mix}");
    let api = bed.api::<IndividualEnrollment>();
    let secret = format!("{name}-keys");
    api.create(&PostParams::default(), &symmetric_enrollment(&name, &secret, true, json!({}))).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>(&name).await;
    let key = primary_key(bed, &secret).await;
    assigned(register(&bed.engine, &name, with_key(&key)).await, &name);
    let disable = Patch::Merge(json!({"spec": {"provisioningStatus": "Disabled"}}));
    api.patch(&name, &PatchParams::default(), &disable).await.expect("disable");
    bed.wait_ready::<IndividualEnrollment>(&name).await;
    let refused = register(&bed.engine, &name, with_key(&key)).await;
    assert!(refused.disabled(), "{mix}: a disabled entry must refuse its device: {refused:?}");
    api.delete(&name, &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<IndividualEnrollment>(&name).await;
    (name, key)
}

/// A group with three devices, deleted (devices Disable).
async fn group_deletion(bed: &Bed, mix: &str) -> (Vec<(String, String)>, String) {
    let name = format!("egrp-{mix}");
    let api = bed.api::<EnrollmentGroup>();
    let extra = json!({ "onDelete": { "devices": "Disable" } });
    api.create(&PostParams::default(), &group(&name, generated_keys(&format!("{name}-keys")), extra))
        .await
        .expect("created");
    bed.wait_ready::<EnrollmentGroup>(&name).await;
    let key = primary_key(bed, &format!("{name}-keys")).await;
    let mut devices = Vec::new();
    for i in 1..=3 {
        let id = format!("{name}-{i}");
        devices.push(assigned(register(&bed.engine, &id, with_group_key(&key)).await, &id));
    }
    api.delete(&name, &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<EnrollmentGroup>(&name).await;
    (devices, key)
}

/// A group device deprovisioned to Completed; refused from then on.
async fn deprovision(bed: &Bed, mix: &str) -> (String, String) {
    let id = format!("pump-{mix}");
    let (hub, device_id) = assigned(register(&bed.engine, &id, with_group_key(GROUP_KEY)).await, &id);
    let order: DeviceDeprovision = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "DeviceDeprovision",
        "metadata": { "name": id },
        "spec": { "provisioningServiceRef": { "name": SERVICE }, "registrationId": id, "reason": "stolen" },
    }))
    .expect("a valid DeviceDeprovision");
    bed.api::<DeviceDeprovision>().create(&PostParams::default(), &order).await.expect("created");
    let done = bed.wait_ready::<DeviceDeprovision>(&id).await;
    let phase = serde_json::to_value(done.status.expect("status").phase).expect("phase");
    assert_eq!(phase, "Completed", "{mix}");
    let refused = register(&bed.engine, &id, with_group_key(GROUP_KEY)).await;
    assert!(refused.disabled(), "{mix}: a deprovisioned device must stay out: {refused:?}");
    (hub, device_id)
}

#[tokio::test]
async fn controllers_converge_and_never_readmit_a_revoked_device_under_each_fault_mix() {
    let seed = seed();
    crate::support::figures::report(format!("fault suite: seed {seed} (DPS_SEED={seed} replays the draws)"));
    let bed = Bed::start("faults").await;
    for mix in mixes() {
        key_group(&bed, &format!("pump-{}", mix.name)).await;
    }
    for (n, mix) in mixes().into_iter().enumerate() {
        let reconciles_before = faults::reconciles(&bed.operator).await;
        faults::set(&bed.engine, &json!({ "rules": mix.rules, "seed": seed.wrapping_add(n as u64) })).await;
        let started = Instant::now();
        let ((ienr, ienr_key), (group_devices, group_key), (hub, device_id)) =
            tokio::join!(individual(&bed, mix.name), group_deletion(&bed, mix.name), deprovision(&bed, mix.name));
        let converged = started.elapsed();
        let injected = faults::injected(&bed.engine).await;
        faults::clear(&bed.engine).await;
        let reconciles = faults::reconciles(&bed.operator).await - reconciles_before;
        crate::support::figures::report(format!(
            "fault mix {:<12} converged in {:>5.1?}: {reconciles} reconciles; injected {} errors, {} drops before \
             apply, {} drops after apply, {} delays over {} requests",
            mix.name,
            converged,
            injected.errors,
            injected.drops_before_apply,
            injected.drops_after_apply,
            injected.delayed,
            injected.requests,
        ));
        assert!(injected.requests > 0, "{}: the operator's calls went through the fault plan", mix.name);
        assert!(converged < Duration::from_secs(120), "{}: converged too slowly ({converged:?})", mix.name);

        // Checked with faults off: what the deletions and the deprovision left behind.
        let dps = bed.engine.dps();
        assert!(dps.get_enrollment(&ienr).await.expect_err("entry deleted").is_not_found(), "{}", mix.name);
        let again = register(&bed.engine, &ienr, with_key(&ienr_key)).await;
        assert!(again.refused_at_register(), "{}: a deleted enrollment's device registered again: {again:?}", mix.name);
        for (hub, device_id) in &group_devices {
            let device = bed.engine.hub(hub_index(&bed, hub)).get_device(device_id).await.expect("device kept");
            assert_eq!(device.status, Some(DeviceStatus::Disabled), "{}: {device_id}", mix.name);
            let again = register(&bed.engine, device_id, with_group_key(&group_key)).await;
            assert!(again.refused_at_register(), "{}: a revoked group device registered again: {again:?}", mix.name);
        }
        let entry = dps.get_enrollment(&format!("pump-{}", mix.name)).await.expect("blocking entry");
        assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled), "{}", mix.name);
        let device = bed.engine.hub(hub_index(&bed, &hub)).get_device(&device_id).await.expect("hub device");
        assert_eq!(device.status, Some(DeviceStatus::Disabled), "{}", mix.name);
    }
    bed.ns.delete().await;
}
