//! The revocation invariant, checked over random interleavings with a fixed, printed seed.
//!
//! Random steps create, update and delete DeviceDeprovisions, IndividualEnrollments and the EnrollmentGroup,
//! kill the operator with SIGKILL and start it again, tamper with DPS entries and hub devices through the
//! service APIs (as a person with the service's credentials would), and let devices try to register.
//!
//! The invariant, precisely:
//! - A device is *revoked* from the moment the test reads a DeviceDeprovision for it in phase Revoked,
//!   Deregistering or Completed, until that DeviceDeprovision is gone after being deleted with
//!   `onDelete: Reinstate`. Nothing else lifts it: not deleting it with `Retain`, not an
//!   IndividualEnrollment whose spec says `Enabled`, not the group being deleted and created again.
//! - While a device is revoked, no registration attempt with any credential the device ever held ends
//!   `assigned`.
//! - Tampering is done by the test after Revoked: it re-enables the blocking entry or the hub device.
//!   A registration in the moment between that tamper and the operator's revert would be the test's own
//!   doing, so the device is not tried in that window; instead the test asserts that the operator puts
//!   the entry (and the hub device) back to disabled within the resync period plus a margin. Only devices
//!   whose DeviceDeprovision still exists are tampered with: after a `Retain` deletion the block is kept
//!   but no longer watched, and re-enabling it through the service API is a person's explicit act.
//! - Adopting a left-behind blocking entry (`dps.iot-operator.dev/adopt`) is not among the steps: an
//!   adopting IndividualEnrollment that says `Enabled` re-enables the entry and the device registers.
//!   Whether adoption counts as an explicit reinstatement is a design decision left open; see the HOSTILE
//!   section of tests/sdk-compat/WIRE-NOTES.md.
//! - At the end every resource is deleted and every finalizer released within a deadline, and the devices
//!   still revoked are refused once more.
//!
//! The test runs on a control plane of its own, so restarting its kube-apiserver (SIGKILL, then the same
//! command line again on the same etcd) disturbs no other test.
//!
//! `DPS_SEED=<n>` replays a run; `DPS_LONG=1` runs ten times the steps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::device_deprovision::DeprovisionPhase;
use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};
use dps_operator::azure::wire::{DeviceStatus, ProvisioningStatus};

use crate::support::control_plane::{OwnControlPlane, client_for, install_crds};
use crate::support::device::{Registration, register, with_group_key, with_key};
use crate::support::eventually;
use crate::support::operator::{Bed, SERVICE};

/// Fixed, recognisable keys (the secret-hygiene scan looks for them in everything the run printed).
pub(crate) const GROUP_KEY: &str = "SU5WQVJJQU5ULWdyb3VwLWtleS0wMDAwMDAwMDAwMDAwMDAwMDAwMA==";
pub(crate) const OWN_KEYS: [&str; 2] = [
    "SU5WQVJJQU5ULW93bi1rZXktMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA==",
    "SU5WQVJJQU5ULW93bi1rZXktMTExMTExMTExMTExMTExMTExMTExMQ==",
];
const GROUP_DEVICES: [&str; 3] = ["inv-g0", "inv-g1", "inv-g2"];
const OWN_DEVICES: [&str; 2] = ["inv-o0", "inv-o1"];
const RESYNC_SECONDS: &str = "2";
/// How long the operator may take to put tampering back: a resync period, a reconcile, and a loaded machine.
const REVERT_DEADLINE: Duration = Duration::from_secs(45);
const DEFAULT_SEED: u64 = 0x5EED_0010;

/// SplitMix64: tiny, and the same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    CreateDeprovision,
    UpdateDeprovision,
    DeleteDeprovision,
    CreateEnrollment,
    UpdateEnrollment,
    DeleteEnrollment,
    ToggleGroup,
    DeleteGroup,
    KillOperator,
    RestartApiserver,
    TamperEntry,
    TamperHubDevice,
    Register,
}

const STEPS: [Step; 13] = [
    Step::CreateDeprovision,
    Step::UpdateDeprovision,
    Step::DeleteDeprovision,
    Step::CreateEnrollment,
    Step::UpdateEnrollment,
    Step::DeleteEnrollment,
    Step::ToggleGroup,
    Step::DeleteGroup,
    Step::KillOperator,
    Step::RestartApiserver,
    Step::TamperEntry,
    Step::TamperHubDevice,
    Step::Register,
];

#[derive(Default)]
struct Device {
    /// The DeviceDeprovision in force for it, with its current `onDelete: Reinstate`.
    deprovision: Option<bool>,
    revoked: bool,
    /// Whether its IndividualEnrollment exists (own devices only).
    enrolled: bool,
}

#[derive(Default)]
struct Tally {
    steps: BTreeMap<Step, usize>,
    pairs: BTreeSet<(Step, Step)>,
    attempts: usize,
    assigned: usize,
    refused: usize,
    attempts_while_revoked: usize,
    reverted: usize,
    kills: usize,
    apiserver_restarts: usize,
    revived: usize,
}

struct Run {
    bed: Bed,
    /// Declared after the bed, so the operator stops before its control plane does.
    plane: OwnControlPlane,
    rng: Rng,
    devices: BTreeMap<&'static str, Device>,
    group_exists: bool,
    /// Each restart costs about ten seconds, so the short run caps them.
    max_apiserver_restarts: usize,
    tally: Tally,
    log: Vec<String>,
}

fn resync_env() -> [(&'static str, &'static str); 1] {
    [("DPS_OPERATOR_RESYNC_SECONDS", RESYNC_SECONDS)]
}

fn manifest<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: serde_json::Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("a valid {kind}: {e}"))
}

fn key_secret(name: &str, primary: &str, secondary: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name },
        "stringData": { "primaryKey": primary, "secondaryKey": secondary },
    }))
    .expect("Secret")
}

impl Run {
    fn note(&mut self, line: String) {
        println!("[invariant] {line}");
        self.log.push(line);
    }

    fn fail(&self, what: String) -> ! {
        panic!("revocation invariant broken: {what}\nsteps so far:\n{}", self.log.join("\n"))
    }

    async fn create_group(&mut self) {
        let spec = json!({
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": "fleet-keys" } },
        });
        let group: EnrollmentGroup = manifest("EnrollmentGroup", "inv-fleet", spec);
        self.bed.api::<EnrollmentGroup>().create(&PostParams::default(), &group).await.expect("group created");
        self.group_exists = true;
    }

    /// Reads every DeviceDeprovision and marks the devices whose order reports Revoked or later.
    async fn observe(&mut self) {
        let list = self.bed.api::<DeviceDeprovision>().list(&ListParams::default()).await.expect("list");
        let mut newly = Vec::new();
        for order in list {
            let phase = order.status.as_ref().map(|s| s.phase).unwrap_or_default();
            let revoked = matches!(
                phase,
                DeprovisionPhase::Revoked | DeprovisionPhase::Deregistering | DeprovisionPhase::Completed
            );
            if let Some(device) = self.devices.get_mut(order.spec.registration_id.as_str())
                && revoked
                && !device.revoked
            {
                device.revoked = true;
                newly.push(format!("observed {} {phase:?}: revoked from now on", order.spec.registration_id));
            }
        }
        for line in newly {
            self.note(line);
        }
    }

    async fn try_register(&mut self, id: &'static str) {
        let own = OWN_DEVICES.iter().position(|d| *d == id);
        let auth = match own {
            Some(i) => with_key(OWN_KEYS[i]),
            None => with_group_key(GROUP_KEY),
        };
        let outcome = register(&self.bed.engine, id, auth).await;
        self.tally.attempts += 1;
        let revoked = self.devices[id].revoked;
        if revoked {
            self.tally.attempts_while_revoked += 1;
        }
        match &outcome {
            Registration::Assigned { hub, .. } => {
                self.tally.assigned += 1;
                if revoked {
                    self.fail(format!("{id} registered (assigned to {hub}) while revoked"));
                }
            }
            _ => self.tally.refused += 1,
        }
        let word = if matches!(outcome, Registration::Assigned { .. }) { "assigned" } else { "refused" };
        self.note(format!("register {id}: {word}{}", if revoked { " (revoked)" } else { "" }));
    }

    /// Starts the operator again when it has exited by itself, as the kubelet restarts a failed pod (it exits
    /// when it finds the apiserver unreachable at start, which a restart of the apiserver can cause).
    fn revive(&mut self) {
        if self.bed.operator.exit_code().is_some() {
            self.bed.operator.restart_with(&resync_env());
            self.tally.revived += 1;
            self.note("the operator had exited by itself; started again, as the kubelet would".into());
        }
    }

    /// Waits until `name` is gone (every finalizer released), reviving the operator as a kubelet would.
    async fn wait_gone<K>(&mut self, name: &str)
    where
        K: crate::support::Namespaced,
    {
        let api = self.bed.api::<K>();
        let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
        while !matches!(api.get_opt(name).await, Ok(None)) {
            if tokio::time::Instant::now() > give_up {
                self.fail(format!("{} {name} was not released within 90 s", K::kind(&())));
            }
            self.revive();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn step(&mut self, step: Step) -> bool {
        let all: Vec<&'static str> = self.devices.keys().copied().collect();
        let id = *self.rng.pick(&all);
        self.step_on(step, id).await
    }

    async fn step_on(&mut self, step: Step, id: &'static str) -> bool {
        let own = OWN_DEVICES.contains(&id);
        let deprovisions = self.bed.api::<DeviceDeprovision>();
        match step {
            Step::CreateDeprovision => {
                if self.devices[id].deprovision.is_some() {
                    return false;
                }
                let reinstate = self.rng.below(2) == 0;
                let delete = self.rng.below(3) == 0;
                let spec = json!({
                    "provisioningServiceRef": { "name": SERVICE },
                    "registrationId": id,
                    "reason": "invariant test",
                    "device": if delete { "Delete" } else { "Disable" },
                    "onDelete": if reinstate { "Reinstate" } else { "Retain" },
                });
                let order: DeviceDeprovision = manifest("DeviceDeprovision", id, spec);
                deprovisions.create(&PostParams::default(), &order).await.expect("deprovision created");
                self.devices.get_mut(id).expect("device").deprovision = Some(reinstate);
                self.note(format!("create deprovision {id} (reinstate={reinstate}, delete device={delete})"));
            }
            Step::UpdateDeprovision => {
                let Some(reinstate) = self.devices[id].deprovision else { return false };
                let flip = self.rng.below(2) == 0;
                let now = reinstate != flip;
                let patch = json!({"spec": {
                    "reason": format!("invariant test {}", self.rng.below(1000)),
                    "onDelete": if now { "Reinstate" } else { "Retain" },
                }});
                deprovisions.patch(id, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patched");
                self.devices.get_mut(id).expect("device").deprovision = Some(now);
                self.note(format!("update deprovision {id} (reinstate={now})"));
            }
            Step::DeleteDeprovision => {
                let Some(reinstate) = self.devices[id].deprovision else { return false };
                deprovisions.delete(id, &DeleteParams::default()).await.expect("delete accepted");
                self.note(format!("delete deprovision {id} (reinstate={reinstate})"));
                self.wait_gone::<DeviceDeprovision>(id).await;
                let device = self.devices.get_mut(id).expect("device");
                device.deprovision = None;
                if reinstate && device.revoked {
                    device.revoked = false;
                    self.note(format!("{id} reinstated"));
                }
            }
            Step::CreateEnrollment | Step::UpdateEnrollment | Step::DeleteEnrollment if !own => return false,
            Step::CreateEnrollment => {
                if self.devices[id].enrolled {
                    return false;
                }
                let enabled = self.rng.below(4) != 0;
                let spec = json!({
                    "provisioningServiceRef": { "name": SERVICE },
                    "provisioningStatus": if enabled { "Enabled" } else { "Disabled" },
                    "attestation": { "symmetricKey": { "secretName": format!("{id}-keys") } },
                });
                // Without the adopt annotation: an entry left behind (a retained block) stalls it with Conflict.
                let enrollment: IndividualEnrollment = manifest("IndividualEnrollment", id, spec);
                self.bed
                    .api::<IndividualEnrollment>()
                    .create(&PostParams::default(), &enrollment)
                    .await
                    .expect("created");
                self.devices.get_mut(id).expect("device").enrolled = true;
                self.note(format!("create enrollment {id} (enabled={enabled})"));
            }
            Step::UpdateEnrollment => {
                if !self.devices[id].enrolled {
                    return false;
                }
                let enabled = self.rng.below(3) != 0;
                let patch = json!({"spec": {"provisioningStatus": if enabled { "Enabled" } else { "Disabled" }}});
                let api = self.bed.api::<IndividualEnrollment>();
                api.patch(id, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patched");
                self.note(format!("update enrollment {id} (enabled={enabled})"));
            }
            Step::DeleteEnrollment => {
                if !self.devices[id].enrolled {
                    return false;
                }
                let api = self.bed.api::<IndividualEnrollment>();
                api.delete(id, &DeleteParams::default()).await.expect("delete accepted");
                self.note(format!("delete enrollment {id}"));
                self.wait_gone::<IndividualEnrollment>(id).await;
                self.devices.get_mut(id).expect("device").enrolled = false;
            }
            Step::ToggleGroup => {
                if !self.group_exists {
                    self.create_group().await;
                    self.note("create group inv-fleet".into());
                    return true;
                }
                let enabled = self.rng.below(3) != 0;
                let patch = json!({"spec": {"provisioningStatus": if enabled { "Enabled" } else { "Disabled" }}});
                let api = self.bed.api::<EnrollmentGroup>();
                api.patch("inv-fleet", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patched");
                self.note(format!("update group inv-fleet (enabled={enabled})"));
            }
            Step::DeleteGroup => {
                if !self.group_exists {
                    return false;
                }
                let api = self.bed.api::<EnrollmentGroup>();
                api.delete("inv-fleet", &DeleteParams::default()).await.expect("delete accepted");
                self.note("delete group inv-fleet".into());
                self.wait_gone::<EnrollmentGroup>("inv-fleet").await;
                self.group_exists = false;
            }
            Step::KillOperator => {
                self.bed.operator.restart_with(&resync_env());
                self.tally.kills += 1;
                self.note("operator killed (SIGKILL) and started again".into());
            }
            Step::RestartApiserver => {
                if self.tally.apiserver_restarts >= self.max_apiserver_restarts {
                    return false;
                }
                self.plane.restart_apiserver().await;
                self.tally.apiserver_restarts += 1;
                self.note("kube-apiserver killed (SIGKILL) and started again".into());
            }
            Step::TamperEntry => {
                // Only an order in force reverts tampering; a retained block is kept, not watched.
                if !self.devices[id].revoked || self.devices[id].deprovision.is_none() {
                    return false;
                }
                let dps = self.bed.engine.dps();
                let Ok(mut entry) = dps.get_enrollment(id).await else { return false };
                if entry.provisioning_status != Some(ProvisioningStatus::Disabled) {
                    return false;
                }
                entry.provisioning_status = Some(ProvisioningStatus::Enabled);
                entry.attestation = dps.enrollment_attestation(id).await.expect("attestation");
                entry.registration_state = None;
                let etag = entry.etag.clone();
                if dps.update_enrollment(&entry, etag.as_deref()).await.is_err() {
                    return false; // the operator wrote it in between; nothing was tampered
                }
                self.note(format!("tamper: re-enabled DPS entry {id}"));
                let what = format!("the operator to disable the tampered entry {id} again");
                eventually(&what, REVERT_DEADLINE, || {
                    let dps = dps.clone();
                    async move {
                        let entry = dps.get_enrollment(id).await.ok()?;
                        (entry.provisioning_status == Some(ProvisioningStatus::Disabled)).then_some(())
                    }
                })
                .await;
                self.tally.reverted += 1;
                self.note(format!("entry {id} disabled again by the operator"));
            }
            Step::TamperHubDevice => {
                // Only an order in force reverts tampering; a retained block is kept, not watched.
                if !self.devices[id].revoked || self.devices[id].deprovision.is_none() {
                    return false;
                }
                let order = deprovisions.get_opt(id).await.expect("read");
                let Some(status) = order.and_then(|o| o.status) else { return false };
                if status.phase != DeprovisionPhase::Completed {
                    return false;
                }
                let (Some(hub), Some(device_id)) = (status.assigned_hub, status.device_id) else { return false };
                let Some(index) = self.bed.engine.info.hubs.iter().position(|h| h.host_name == hub) else {
                    return false;
                };
                let registry = self.bed.engine.hub(index);
                let Ok(mut device) = registry.get_device(&device_id).await else { return false };
                if device.status != Some(DeviceStatus::Disabled) {
                    return false;
                }
                device.status = Some(DeviceStatus::Enabled);
                let etag = device.etag.clone();
                if registry.update_device(&device, etag.as_deref()).await.is_err() {
                    return false;
                }
                self.note(format!("tamper: re-enabled hub device {device_id}"));
                let what = format!("the operator to disable the tampered hub device {device_id} again");
                eventually(&what, REVERT_DEADLINE, || {
                    let (registry, device_id) = (registry.clone(), device_id.clone());
                    async move {
                        let device = registry.get_device(&device_id).await.ok()?;
                        (device.status == Some(DeviceStatus::Disabled)).then_some(())
                    }
                })
                .await;
                self.tally.reverted += 1;
                self.note(format!("hub device {device_id} disabled again by the operator"));
            }
            Step::Register => self.try_register(id).await,
        }
        true
    }

    /// Tampers with one revoked device whose order is in force, making such a device first when none is.
    async fn tamper_once(&mut self) {
        let ids: Vec<&'static str> = self.devices.keys().copied().collect();
        for id in &ids {
            if self.step_on(Step::TamperEntry, id).await {
                *self.tally.steps.entry(Step::TamperEntry).or_default() += 1;
                return;
            }
        }
        // A device without an order gets one; else every device has one, and the first will report Revoked.
        let id = ids.iter().copied().find(|id| self.devices[*id].deprovision.is_none()).unwrap_or(ids[0]);
        self.step_on(Step::CreateDeprovision, id).await;
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self.devices[id].revoked {
            assert!(tokio::time::Instant::now() < give_up, "{id} was not revoked within 60 s");
            self.revive();
            self.observe().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(self.step_on(Step::TamperEntry, id).await, "the blocking entry of {id} could be tampered with");
        *self.tally.steps.entry(Step::TamperEntry).or_default() += 1;
    }

    /// Deletes everything, waits for every finalizer to be released, and tries the revoked devices once more.
    async fn finish(&mut self) {
        for id in self.devices.keys().copied().collect::<Vec<_>>() {
            if self.devices[id].deprovision.is_some() {
                // Retain, so the devices that are revoked stay revoked after the resources are gone.
                let patch = json!({"spec": {"onDelete": "Retain"}});
                let api = self.bed.api::<DeviceDeprovision>();
                api.patch(id, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patched");
                api.delete(id, &DeleteParams::default()).await.expect("delete accepted");
                self.wait_gone::<DeviceDeprovision>(id).await;
                self.devices.get_mut(id).expect("device").deprovision = None;
                self.note(format!("final: deprovision {id} deleted with Retain"));
            }
        }
        self.observe().await;
        let revoked: Vec<&'static str> = self.devices.iter().filter(|(_, d)| d.revoked).map(|(id, _)| *id).collect();
        for id in revoked {
            self.try_register(id).await;
        }
        for id in OWN_DEVICES {
            if self.devices[id].enrolled {
                self.bed.api::<IndividualEnrollment>().delete(id, &DeleteParams::default()).await.expect("delete");
                self.wait_gone::<IndividualEnrollment>(id).await;
            }
        }
        if self.group_exists {
            self.bed.api::<EnrollmentGroup>().delete("inv-fleet", &DeleteParams::default()).await.expect("delete");
            self.wait_gone::<EnrollmentGroup>("inv-fleet").await;
        }
        let services = self.bed.api::<ProvisioningService>();
        services.delete(SERVICE, &DeleteParams::default()).await.expect("delete accepted");
        self.wait_gone::<ProvisioningService>(SERVICE).await;
        let secrets = self.bed.api::<Secret>().list(&ListParams::default()).await.expect("secrets");
        let held: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.finalizers().iter().any(|f| f.contains("iot-operator.dev")))
            .map(|s| s.name_any())
            .collect();
        assert!(held.is_empty(), "Secrets still held by the operator's finalizer: {held:?}");
        self.note("final: every finalizer released".into());
    }
}

#[tokio::test]
async fn no_revoked_device_registers_again_under_random_steps_kills_and_tampering_until_reinstated() {
    let seed = std::env::var("DPS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let long = std::env::var("DPS_LONG").is_ok_and(|v| v == "1");
    let (steps, max_apiserver_restarts) = if long { (400, usize::MAX) } else { (40, 2) };
    crate::support::figures::report(format!("[invariant] seed {seed} (replay with DPS_SEED={seed}), {steps} steps"));

    let plane = OwnControlPlane::start("invariant");
    let client = client_for(&plane.kubeconfig).await;
    install_crds(&client).await;
    let bed = Bed::start_in(client, &plane.kubeconfig, "invariant", &[], &resync_env()).await;
    let secrets = bed.api::<Secret>();
    secrets.create(&PostParams::default(), &key_secret("fleet-keys", GROUP_KEY, OWN_KEYS[1])).await.expect("Secret");
    for (i, id) in OWN_DEVICES.iter().enumerate() {
        let secret = key_secret(&format!("{id}-keys"), OWN_KEYS[i], OWN_KEYS[1 - i]);
        secrets.create(&PostParams::default(), &secret).await.expect("Secret");
    }
    let devices = GROUP_DEVICES.iter().chain(OWN_DEVICES.iter()).map(|id| (*id, Device::default())).collect();
    let mut run = Run {
        bed,
        plane,
        rng: Rng(seed),
        devices,
        group_exists: false,
        max_apiserver_restarts,
        tally: Tally::default(),
        log: Vec::new(),
    };
    run.create_group().await;
    run.bed.wait_ready::<EnrollmentGroup>("inv-fleet").await;
    for id in GROUP_DEVICES {
        run.try_register(id).await;
    }

    let mut previous = None;
    let mut done = 0;
    while done < steps {
        run.revive();
        let step = *run.rng.pick(&STEPS);
        if !run.step(step).await {
            continue;
        }
        done += 1;
        *run.tally.steps.entry(step).or_default() += 1;
        if let Some(previous) = previous {
            run.tally.pairs.insert((previous, step));
        }
        previous = Some(step);
        run.observe().await;
        // Every few steps every device tries, so each state the steps reach is probed.
        if done % 5 == 0 {
            for id in run.devices.keys().copied().collect::<Vec<_>>() {
                run.try_register(id).await;
            }
        }
    }
    // Tampering needs a revoked device at the right moment; when the walk gave none, tamper once now.
    if run.tally.reverted == 0 {
        run.tamper_once().await;
    }
    run.finish().await;

    let t = &run.tally;
    crate::support::figures::report(format!(
        "[invariant] seed {seed}: {done} steps, {} distinct step pairs (interleavings) of {} possible, {} operator kills, \
         {} apiserver restarts, {} operator self-exits revived, {} tamperings reverted, {} registrations ({} assigned, {} refused), {} of them while revoked, 0 admitted",
        t.pairs.len(),
        STEPS.len() * STEPS.len(),
        t.kills,
        t.apiserver_restarts,
        t.revived,
        t.reverted,
        t.attempts,
        t.assigned,
        t.refused,
        t.attempts_while_revoked,
    ));
    println!("[invariant] steps by kind: {:?}", t.steps);
    assert!(t.attempts_while_revoked > 0, "the run never tried a revoked device; pick another seed");
    assert!(t.reverted > 0, "no tampering was put back");
    crate::hygiene::assert_clean("revocation invariant", &run.bed, &[GROUP_KEY, OWN_KEYS[0], OWN_KEYS[1]]).await;
    run.bed.ns.delete().await;
}
