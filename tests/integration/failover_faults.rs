//! Leader failover under faults: two replicas on one namespace, the leader killed at a random moment of a
//! group deletion or a deprovision (at a random failpoint, or by SIGKILL after a random delay) while the
//! engine injects a random fault mix. The follower must finish the order, no revoked device may register
//! again, and no revocation step may be repeated in a harmful way: the engine's request log shows no entry
//! written after its deletion and no blocking entry deleted, and a poller of the revoked objects sees no
//! device or entry enabled again once it was disabled.
//!
//! Three runs by default; `DPS_FAILOVER_RUNS=N`, or `DPS_LONG=1` for 20. `DPS_SEED` replays a run set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup};
use dps_operator::azure::secret::Secret;
use dps_operator::azure::wire::{self, AttestationMechanism, DeviceStatus, ProvisioningStatus};
use dps_operator::controller::failpoint::ENV as FAILPOINT;
use dps_operator::engine::faults::FaultCounts;

use crate::controller_group::{generated_keys, group};
use crate::controller_individual::{event_reasons, primary_key};
use crate::faults::{mixes, seed};
use crate::leader_election::{LEADING, WAITING, replica_args};
use crate::support::device::{Registration, register, with_group_key};
use crate::support::eventually;
use crate::support::faults::{self, Write};
use crate::support::operator::{Bed, Operator, SERVICE};

const GROUP_KEY: &str = "Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M=";
const GROUP_STEPS: &[&str] = &[
    "egrp-after-group-disabled",
    "egrp-after-devices-page",
    "egrp-after-devices-revoked",
    "egrp-after-registrations-deleted",
    "egrp-after-group-removed",
];
const DEPROVISION_STEPS: &[&str] = &[
    "deprov-after-intent",
    "deprov-after-entry-written",
    "deprov-after-revoked",
    "deprov-after-deregistering",
    "deprov-after-hub-device",
];
/// Lease expiry (6 s) plus the follower's work under faults.
const TAKEOVER: Duration = Duration::from_secs(90);

/// Where the leader dies.
#[derive(Debug, Clone)]
enum Kill {
    /// Exits at once right after this step (as `kill -9` would leave it).
    At(&'static str),
    /// SIGKILL this long after the order was given.
    After(Duration),
}

fn runs() -> u64 {
    let long = std::env::var("DPS_LONG").is_ok_and(|v| v == "1");
    std::env::var("DPS_FAILOVER_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(if long { 20 } else { 3 })
}

/// Successful writes, per method and path, for the report.
fn tally(writes: &[Write]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for w in writes.iter().filter(|w| (200..300).contains(&w.status)) {
        *counts.entry(format!("{} {}", w.method, w.path)).or_insert(0) += 1;
    }
    counts
}

/// Whether a successful `PUT path` follows a successful `DELETE path`: an entry re-created (or disabled
/// again, i.e. re-created) after its deletion.
fn written_after_deletion(writes: &[Write], path: &str) -> bool {
    let ok = |w: &&Write| w.path == path && (200..300).contains(&w.status);
    let deleted = writes.iter().filter(ok).position(|w| w.method == "DELETE");
    deleted.is_some_and(|at| writes.iter().filter(ok).skip(at + 1).any(|w| w.method == "PUT"))
}

/// A poller of the revoked objects while the order runs: it reports any hub device seen enabled after it
/// was seen disabled, and the entry seen enabled (or, for a blocking entry, gone) after it was seen disabled.
struct Watch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Watch {
    /// `devices` as (hub, device ID); `entry` the DPS entry and whether it is a group (whose deletion is
    /// the order's last step, not an undoing).
    fn start(bed: &Bed, devices: &[(String, String)], entry: &str, group: bool) -> Watch {
        let hubs: Vec<_> = devices
            .iter()
            .map(|(hub, id)| {
                let index = bed.engine.info.hubs.iter().position(|h| &h.host_name == hub).expect("a known hub");
                (bed.engine.hub(index), id.clone())
            })
            .collect();
        let (dps, entry) = (bed.engine.dps(), entry.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut undone, mut disabled_devices, mut entry_disabled) = (Vec::new(), vec![false; hubs.len()], false);
            while !stopped.load(Ordering::SeqCst) {
                for (i, (hub, id)) in hubs.iter().enumerate() {
                    match hub.get_device(id).await.map(|d| d.status) {
                        Ok(Some(DeviceStatus::Disabled)) => disabled_devices[i] = true,
                        Ok(_) if disabled_devices[i] => undone.push(format!("hub device {id} enabled again")),
                        _ => {}
                    }
                }
                let status = if group {
                    dps.get_enrollment_group(&entry).await.map(|g| g.provisioning_status)
                } else {
                    dps.get_enrollment(&entry).await.map(|e| e.provisioning_status)
                };
                match status {
                    Ok(Some(ProvisioningStatus::Disabled)) => entry_disabled = true,
                    Ok(_) if entry_disabled => undone.push(format!("entry {entry} enabled again")),
                    Err(e) if e.is_not_found() && entry_disabled && !group => {
                        undone.push(format!("blocking entry {entry} deleted"))
                    }
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            undone
        });
        Watch { stop, task }
    }

    /// Stops polling; what it saw undone.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the watcher ends")
    }
}

async fn start_leader_and_follower(kill: &Kill, run: u64) -> (Bed, Operator) {
    let env: Vec<(&str, &str)> = match kill {
        Kill::At(step) => vec![(FAILPOINT, *step)],
        Kill::After(_) => Vec::new(),
    };
    let bed = Bed::start_with_args(&format!("failover-{run}"), &replica_args("replica-a"), &env).await;
    assert!(bed.operator.log().contains(LEADING), "the first process leads:\n{}", bed.operator.log());
    let follower = Operator::start_replica(&bed.ns.name, &format!("follower-{run}"), &replica_args("replica-b"), &[]);
    eventually("the second process to wait for the lease", Duration::from_secs(60), || {
        let waiting = follower.log().contains(WAITING);
        async move { waiting.then_some(()) }
    })
    .await;
    (bed, follower)
}

/// Kills the leader as `kill` says; the time it died.
async fn kill_leader(bed: &mut Bed, kill: &Kill) -> Instant {
    match kill {
        Kill::At(step) => {
            let code = bed.operator.wait_for_exit(Duration::from_secs(60)).await;
            assert_eq!(code, Some(86), "the leader did not stop at {step}");
        }
        Kill::After(delay) => {
            tokio::time::sleep(*delay).await;
            bed.operator.kill_now();
        }
    }
    Instant::now()
}

/// A group of three devices deleted while the leader dies; the follower finishes it.
async fn group_run(bed: &mut Bed, kill: &Kill, plan: &serde_json::Value) -> (Vec<Write>, FaultCounts) {
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group("fleet", generated_keys("fleet-keys"), json!({})))
        .await
        .expect("created");
    bed.wait_ready::<EnrollmentGroup>("fleet").await;
    let key = primary_key(bed, "fleet-keys").await;
    let mut devices = Vec::new();
    for i in 1..=3 {
        match register(&bed.engine, &format!("fleet-{i}"), with_group_key(&key)).await {
            Registration::Assigned { hub, device_id } => devices.push((hub, device_id)),
            other => panic!("fleet-{i} was refused: {other:?}"),
        }
    }
    let before = faults::writes(&bed.engine).len();
    faults::set(&bed.engine, plan).await;
    let watch = Watch::start(bed, &devices, "fleet", true);
    api.delete("fleet", &DeleteParams::default()).await.expect("delete accepted");
    kill_leader(bed, kill).await;
    eventually("the follower to finish the deletion", TAKEOVER, || {
        let api = api.clone();
        async move { matches!(api.get_opt("fleet").await, Ok(None)).then_some(()) }
    })
    .await;
    let undone = watch.finish().await;
    assert!(undone.is_empty(), "a revocation was undone meanwhile: {undone:?}");
    let injected = faults::injected(&bed.engine).await;
    faults::clear(&bed.engine).await;
    let writes = faults::writes(&bed.engine).split_off(before);

    assert!(bed.engine.dps().get_enrollment_group("fleet").await.expect_err("group deleted").is_not_found());
    for (hub, device_id) in &devices {
        let index = bed.engine.info.hubs.iter().position(|h| &h.host_name == hub).expect("a known hub");
        let device = bed.engine.hub(index).get_device(device_id).await.expect("device kept");
        assert_eq!(device.status, Some(DeviceStatus::Disabled), "{device_id} stays disabled");
        let again = register(&bed.engine, device_id, with_group_key(&key)).await;
        assert!(again.refused_at_register(), "a revoked device registered again: {again:?}");
    }
    assert!(!written_after_deletion(&writes, "/enrollmentGroups/fleet"), "the group was written after its deletion");
    let reasons = event_reasons(bed, "EnrollmentGroup", "fleet").await;
    assert!(!reasons.iter().any(|r| r.ends_with("Enabled")), "nothing re-enabled: {reasons:?}");
    (writes, injected)
}

/// A group device deprovisioned while the leader dies; the follower completes it.
async fn deprovision_run(bed: &mut Bed, kill: &Kill, plan: &serde_json::Value) -> (Vec<Write>, FaultCounts) {
    let group = wire::EnrollmentGroup {
        enrollment_group_id: "pumps".into(),
        attestation: AttestationMechanism::symmetric_key(Some(Secret::new(GROUP_KEY.to_string())), None),
        ..wire::EnrollmentGroup::default()
    };
    bed.engine.dps().create_enrollment_group(&group).await.expect("group enrolled");
    let Registration::Assigned { hub, device_id } = register(&bed.engine, "pump-1", with_group_key(GROUP_KEY)).await
    else {
        panic!("pump-1 was refused");
    };
    let order: DeviceDeprovision = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "DeviceDeprovision",
        "metadata": { "name": "pump-1" },
        "spec": { "provisioningServiceRef": { "name": SERVICE }, "registrationId": "pump-1", "reason": "stolen" },
    }))
    .expect("a valid DeviceDeprovision");
    let before = faults::writes(&bed.engine).len();
    faults::set(&bed.engine, plan).await;
    let watch = Watch::start(bed, &[(hub.clone(), device_id.clone())], "pump-1", false);
    bed.api::<DeviceDeprovision>().create(&PostParams::default(), &order).await.expect("created");
    kill_leader(bed, kill).await;
    let api = bed.api::<DeviceDeprovision>();
    eventually("the follower to complete the deprovision", TAKEOVER, || {
        let api = api.clone();
        async move {
            let order = api.get_opt("pump-1").await.ok().flatten()?;
            let phase = serde_json::to_value(order.status?.phase).ok()?;
            (phase == "Completed").then_some(())
        }
    })
    .await;
    let undone = watch.finish().await;
    assert!(undone.is_empty(), "a revocation was undone meanwhile: {undone:?}");
    let injected = faults::injected(&bed.engine).await;
    faults::clear(&bed.engine).await;
    let writes = faults::writes(&bed.engine).split_off(before);

    let entry = bed.engine.dps().get_enrollment("pump-1").await.expect("blocking entry");
    assert_eq!(entry.provisioning_status, Some(ProvisioningStatus::Disabled));
    let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("a known hub");
    let device = bed.engine.hub(index).get_device(&device_id).await.expect("hub device");
    assert_eq!(device.status, Some(DeviceStatus::Disabled));
    let again = register(&bed.engine, "pump-1", with_group_key(GROUP_KEY)).await;
    assert!(again.disabled(), "a deprovisioned device registered again: {again:?}");
    let deleted = faults::count(&writes, "DELETE", "/enrollments/pump-1");
    assert_eq!(deleted, 0, "the blocking entry must never be deleted: {writes:?}");
    let reasons = event_reasons(bed, "DeviceDeprovision", "pump-1").await;
    assert!(!reasons.iter().any(|r| r.ends_with("Enabled")), "nothing re-enabled: {reasons:?}");
    (writes, injected)
}

#[tokio::test]
async fn a_follower_finishes_group_deletions_and_deprovisions_after_random_leader_kills_under_faults_without_harmful_repeats()
 {
    let (seed, runs) = (seed(), runs());
    crate::support::figures::report(format!(
        "failover under faults: seed {seed}, {runs} runs (DPS_SEED={seed} replays the choices)"
    ));
    let mut rng = fastrand::Rng::with_seed(seed);
    let all_mixes = mixes();
    for run in 0..runs {
        let deprovision = rng.bool();
        let steps = if deprovision { DEPROVISION_STEPS } else { GROUP_STEPS };
        let kill = if rng.bool() {
            Kill::At(steps[rng.usize(0..steps.len())])
        } else {
            Kill::After(Duration::from_millis(rng.u64(0..2000)))
        };
        let mix = &all_mixes[rng.usize(0..all_mixes.len())];
        let plan = json!({ "rules": mix.rules, "seed": rng.u64(..) });
        let (mut bed, follower) = start_leader_and_follower(&kill, run).await;
        let started = Instant::now();
        let (writes, injected) = if deprovision {
            deprovision_run(&mut bed, &kill, &plan).await
        } else {
            group_run(&mut bed, &kill, &plan).await
        };
        // A timed kill may land after the order was done: the follower still takes the lease.
        eventually("the follower to lead", TAKEOVER, || {
            let leading = follower.log().contains(LEADING);
            async move { leading.then_some(()) }
        })
        .await;
        crate::support::figures::report(format!(
            "run {run}: {} killed {kill:?} under '{}' ({} faults injected), finished in {:.1?}; backend writes: {:?}",
            if deprovision { "deprovision" } else { "group deletion" },
            mix.name,
            injected.errors + injected.drops_before_apply + injected.drops_after_apply,
            started.elapsed(),
            tally(&writes),
        ));
        bed.ns.delete().await;
    }
}

#[test]
fn a_write_after_a_deletion_of_the_same_entry_is_a_harmful_repeat_and_a_retried_disable_is_not() {
    let w = |method: &str, path: &str, status: u16| Write { method: method.into(), path: path.into(), status };
    let retried = [
        w("PUT", "/enrollmentGroups/g", 200),
        w("PUT", "/enrollmentGroups/g", 200),
        w("DELETE", "/enrollmentGroups/g", 204),
    ];
    assert!(!written_after_deletion(&retried, "/enrollmentGroups/g"));
    let refused_late = [w("DELETE", "/enrollmentGroups/g", 204), w("PUT", "/enrollmentGroups/g", 412)];
    assert!(!written_after_deletion(&refused_late, "/enrollmentGroups/g"), "a refused write changed nothing");
    let recreated = [
        w("PUT", "/enrollmentGroups/g", 200),
        w("DELETE", "/enrollmentGroups/g", 204),
        w("PUT", "/enrollmentGroups/g", 200),
    ];
    assert!(written_after_deletion(&recreated, "/enrollmentGroups/g"));
}
