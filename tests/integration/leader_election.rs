//! Leader election: of two operator processes on one namespace only the Lease holder reconciles, and a
//! follower finishes what a killed leader started, once the lease expires.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::IndividualEnrollment;
use dps_operator::controller::failpoint::ENV as FAILPOINT;

use crate::controller_individual::{event_reasons, primary_key, symmetric_enrollment};
use crate::support::device::{Registration, register, with_key};
use crate::support::eventually;
use crate::support::operator::{Bed, Operator};

/// A short lease keeps the test quick; the follower may take over this long after the last renewal.
const LEASE_DURATION: Duration = Duration::from_secs(6);
const LEASE_ARGS: &[&str] = &["--leader-election", "--lease-duration-seconds", "6", "--lease-renew-seconds", "2"];
/// What the operator logs once it holds the lease, and while it waits for it.
pub(crate) const LEADING: &str = "leading: this replica holds the lease";
pub(crate) const WAITING: &str = "waiting to lead";

fn count(reasons: &[String], reason: &str) -> usize {
    reasons.iter().filter(|r| *r == reason).count()
}

pub(crate) fn replica_args(instance: &'static str) -> Vec<&'static str> {
    LEASE_ARGS.iter().copied().chain(["--instance", instance]).collect()
}

/// (reason, reporting instance) of every event in the namespace, so a test can tell which process wrote.
async fn events_by_instance(bed: &Bed) -> Vec<(String, String)> {
    let events = bed.api::<Event>().list(&ListParams::default()).await.expect("events list");
    events.into_iter().map(|e| (e.reason.unwrap_or_default(), e.reporting_instance.unwrap_or_default())).collect()
}

#[tokio::test]
async fn a_follower_finishes_the_deletion_a_killed_leader_started_within_the_lease_duration_without_repeating_a_step() {
    let leader_args = replica_args("replica-a");
    let mut bed = Bed::start_with_args("leader", &leader_args, &[(FAILPOINT, "ienr-after-entry-disabled")]).await;
    // The ProvisioningService is Ready, so the first process reconciles: it leads.
    assert!(bed.operator.log().contains(LEADING), "the first process leads:\n{}", bed.operator.log());
    let follower = Operator::start_replica(&bed.ns.name, "follower", &replica_args("replica-b"), &[]);
    eventually("the second process to wait for the lease", Duration::from_secs(60), || {
        let waiting = follower.log().contains(WAITING);
        async move { waiting.then_some(()) }
    })
    .await;

    let name = "handover-1";
    let api = bed.api::<IndividualEnrollment>();
    let enrollment = symmetric_enrollment(name, "handover-keys", true, json!({"device": "Delete"}));
    api.create(&PostParams::default(), &enrollment).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>(name).await;
    let key = primary_key(&bed, "handover-keys").await;
    let Registration::Assigned { hub, device_id } = register(&bed.engine, name, with_key(&key)).await else {
        panic!("the enrolled device was refused");
    };
    assert!(!follower.log().contains(LEADING), "only one process leads:\n{}", follower.log());
    let written = events_by_instance(&bed).await;
    assert!(
        !written.is_empty() && written.iter().all(|(_, by)| by == "replica-a"),
        "only the leader writes: {written:?}"
    );

    api.delete(name, &DeleteParams::default()).await.expect("delete accepted");
    let code = bed.operator.wait_for_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(86), "the leader stops right after disabling the entry");
    let killed = Instant::now();
    let margin = Duration::from_secs(15);
    eventually("the follower to finish the deletion", LEASE_DURATION + margin, || {
        let api = api.clone();
        async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
    })
    .await;
    assert!(follower.log().contains(LEADING), "the follower took the lease:\n{}", follower.log());
    eprintln!("the follower finished {:?} after the leader was killed", killed.elapsed());

    assert!(bed.engine.dps().get_enrollment(name).await.expect_err("entry deleted").is_not_found());
    let hub_index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("a known hub");
    let gone = bed.engine.hub(hub_index).get_device(&device_id).await;
    assert!(gone.is_err_and(|e| e.is_not_found()), "the hub device is deleted");
    assert!(register(&bed.engine, name, with_key(&key)).await.refused_at_register(), "the device stays out");
    // The step the leader completed is recorded in status, so the follower resumes after it: the entry
    // is disabled once (by the leader), and each later step happens once (by the follower).
    let reasons = event_reasons(&bed, "IndividualEnrollment", name).await;
    for reason in ["EntryDisabled", "HubDeviceDeleted", "EntryDeleted"] {
        assert_eq!(count(&reasons, reason), 1, "{reason} exactly once; all events: {reasons:?}");
    }
    let written = events_by_instance(&bed).await;
    let by = |reason: &str| written.iter().find(|(r, _)| r == reason).map(|(_, by)| by.as_str());
    assert_eq!(by("EntryDisabled"), Some("replica-a"), "{written:?}");
    assert_eq!(by("EntryDeleted"), Some("replica-b"), "{written:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_leader_whose_lease_another_holder_took_stops_reconciling_and_exits_with_failure() {
    let mut bed = Bed::start_with_args("lease-lost", &replica_args("replica-a"), &[]).await;
    assert!(bed.operator.log().contains(LEADING), "the process leads:\n{}", bed.operator.log());
    let leases = bed.api::<Lease>();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
    let intruder = json!({"spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 600}});
    leases.patch("dps-operator", &PatchParams::default(), &Patch::Merge(&intruder)).await.expect("lease taken");
    let code = bed.operator.wait_for_exit(LEASE_DURATION + Duration::from_secs(15)).await;
    assert_eq!(code, Some(1), "losing the lease ends the process with failure:\n{}", bed.operator.log());
    assert!(bed.operator.log().contains("another replica took the lease"), "{}", bed.operator.log());
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_releases_the_lease_so_the_next_replica_leads_without_waiting_for_expiry() {
    // A lease far longer than the test waits: the next replica can only lead this soon if it was released.
    let long: &[&str] = &["--leader-election", "--lease-duration-seconds", "120", "--lease-renew-seconds", "5"];
    let mut bed = Bed::start_with_args("lease-release", long, &[]).await;
    assert!(bed.operator.log().contains(LEADING), "the first process leads:\n{}", bed.operator.log());
    let code = bed.operator.terminate(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "SIGTERM is a clean stop:\n{}", bed.operator.log());
    let next = Operator::start_replica(&bed.ns.name, "next", long, &[]);
    eventually("the next replica to lead", Duration::from_secs(20), || {
        let leading = next.log().contains(LEADING);
        async move { leading.then_some(()) }
    })
    .await;
    bed.ns.delete().await;
}
