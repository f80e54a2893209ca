//! How a deleted group disables its devices in their hubs: with the identity DPS gave each device (derived
//! from the group), in bulk calls filled across pages of registration states, without reading the devices
//! one by one.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use dps_operator::api::EnrollmentGroup;
use dps_operator::azure::wire::DeviceStatus;

use crate::controller_group::{generated_keys, group, register_all};
use crate::support::certs::TestCa;
use crate::support::device::{Registration, register, with_certificate, with_group_key};
use crate::support::eventually;
use crate::support::operator::Bed;
use crate::support::process::strip_colours;
use crate::support::raw::bulk_request_sizes;

/// Registry reads of `devices` (`GET /devices/{id}`) in the engine's log after byte `from`.
fn device_reads(log: &str, from: usize, devices: &[String]) -> Vec<String> {
    let log = strip_colours(log.get(from..).unwrap_or_default());
    let paths: Vec<String> = devices.iter().map(|d| format!("path=/devices/{d} ")).collect();
    log.lines()
        .filter(|l| l.contains(" request ") && l.contains("method=GET") && paths.iter().any(|p| l.contains(p.as_str())))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn disabling_a_groups_devices_writes_back_the_identity_dps_gave_them_without_reading_any() {
    let bed = Bed::start("egrp-ident").await;
    let api = bed.api::<EnrollmentGroup>();
    let hub = bed.engine.info.hubs[0].host_name.clone();
    let hub_client = bed.engine.hub(0);
    let settings = json!({ "iotHubs": [hub.clone()], "capabilities": { "iotEdge": true } });
    api.create(&PostParams::default(), &group("keys-g", generated_keys("keys-g-keys"), settings.clone()))
        .await
        .expect("created");
    let root = TestCa::root("Revocation Root");
    let signing = json!({ "x509": { "signingCertificates": { "primary": { "pem": root.cert_pem() } } } });
    api.create(&PostParams::default(), &group("certs-g", signing, settings)).await.expect("created");
    bed.wait_ready::<EnrollmentGroup>("keys-g").await;
    bed.wait_ready::<EnrollmentGroup>("certs-g").await;

    let secret = bed.api::<Secret>().get("keys-g-keys").await.expect("the key Secret exists");
    let key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key");
    let mut devices = Vec::new();
    for id in ["keys-g-1", "keys-g-2", "keys-g-3"] {
        match register(&bed.engine, id, with_group_key(&key)).await {
            Registration::Assigned { device_id, .. } => devices.push(device_id),
            other => panic!("{id} was refused: {other:?}"),
        }
    }
    for id in ["certs-g-1", "certs-g-2"] {
        match register(&bed.engine, id, with_certificate(&root.leaf(id))).await {
            Registration::Assigned { device_id, .. } => devices.push(device_id),
            other => panic!("{id} was refused: {other:?}"),
        }
    }
    let mut before = Vec::new();
    for id in &devices {
        before.push(hub_client.get_device(id).await.expect("registered device"));
    }

    // The engine writes its log behind the requests: start counting once the test's own reads are in it.
    let mark = eventually("the test's reads in the engine log", Duration::from_secs(10), || async {
        let log = bed.engine.log();
        (device_reads(&log, 0, &devices).len() >= devices.len()).then_some(log.len())
    })
    .await;
    for name in ["keys-g", "certs-g"] {
        api.delete(name, &DeleteParams::default()).await.expect("delete accepted");
    }
    bed.wait_gone::<EnrollmentGroup>("keys-g").await;
    bed.wait_gone::<EnrollmentGroup>("certs-g").await;

    // Everything the deletions sent, up to their last step, before the test reads the devices itself.
    let log = eventually("both groups deleted in the engine's log", Duration::from_secs(10), || async {
        let log = strip_colours(&bed.engine.log());
        let deleted = |g: &str| log.contains(&format!("path=/enrollmentGroups/{g} status=204"));
        (deleted("keys-g") && deleted("certs-g")).then_some(bed.engine.log())
    })
    .await;
    let reads = device_reads(&log, mark, &devices);
    assert!(reads.is_empty(), "devices read one by one while disabling:\n{}", reads.join("\n"));
    for held in &before {
        let after = hub_client.get_device(&held.device_id).await.expect("the device is kept, disabled");
        assert_eq!(after.status, Some(DeviceStatus::Disabled), "{}", held.device_id);
        assert_eq!(after.authentication, held.authentication, "{}: its credentials must not change", held.device_id);
        assert_eq!(after.capabilities, held.capabilities, "{}", held.device_id);
    }
    bed.ns.delete().await;
}

#[tokio::test]
async fn devices_of_a_group_in_two_hubs_are_disabled_in_bulk_calls_filled_across_pages_of_registrations() {
    let bed = Bed::start("egrp-batch").await;
    let api = bed.api::<EnrollmentGroup>();
    let hubs: Vec<String> = bed.engine.info.hubs.iter().map(|h| h.host_name.clone()).collect();
    let settings = json!({ "iotHubs": hubs.clone(), "allocationPolicy": "Hashed" });
    api.create(&PostParams::default(), &group("spread", generated_keys("spread-keys"), settings))
        .await
        .expect("created");
    bed.wait_ready::<EnrollmentGroup>("spread").await;
    let secret = bed.api::<Secret>().get("spread-keys").await.expect("the key Secret exists");
    let key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key");
    // More than one page of registration states (100), each page shared by both hubs.
    let ids: Vec<String> = (0..130).map(|i| format!("spread-{i:03}")).collect();
    let devices = register_all(&bed, &key, &ids).await;

    api.delete("spread", &DeleteParams::default()).await.expect("delete accepted");
    bed.wait_gone::<EnrollmentGroup>("spread").await;
    for hub in &hubs {
        let held = devices.iter().filter(|(h, _)| h.eq_ignore_ascii_case(hub)).count();
        assert!(held > 0, "the hashed allocation put no device in {hub}");
        let sizes = bulk_request_sizes(&bed.engine, hub, "/devices").await;
        assert_eq!(sizes.iter().sum::<usize>(), held, "{hub}: every device in one bulk item");
        assert_eq!(sizes.len(), held.div_ceil(100), "{hub}: bulk calls of {sizes:?} for {held} devices");
    }
    bed.ns.delete().await;
}
