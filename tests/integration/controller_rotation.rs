//! Zero-downtime credential rotation against the real apiserver and the engine: symmetric keys rolled one
//! slot at a time (by the rotate-key annotation or by editing the key Secret), X.509 certificates added,
//! promoted and removed as plain manifest changes. A probe registers devices holding every credential
//! that must stay valid for the whole of each step, so any moment of refusal fails the test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use dps_operator::api::common::CredentialStatus;
use dps_operator::api::{EnrollmentGroup, IndividualEnrollment};
use dps_operator::azure::device_registration::DeviceAuth;
use dps_operator::azure::secret::Secret as SecretValue;
use dps_operator::controller::rotation::{self, ROTATE_KEY};

use crate::controller_individual::{event_reasons, symmetric_enrollment};
use crate::support::certs::{TestCa, TestLeaf};
use crate::support::device::{Registration, register, with_certificate, with_group_key, with_key};
use crate::support::eventually;
use crate::support::operator::{Bed, SERVICE};

/// A device that must be admitted: what the probe calls it, its registration ID and its credential.
struct Holder {
    label: String,
    registration_id: String,
    auth: DeviceAuth,
}

fn holder(label: &str, registration_id: &str, auth: DeviceAuth) -> Holder {
    Holder { label: label.to_string(), registration_id: registration_id.to_string(), auth }
}

/// Runs `step` (which returns once the operator has confirmed it) while registering every holder over
/// and over; then registers each once more. Fails naming each holder refused at any moment.
async fn never_refused<F: std::future::Future<Output = ()>>(bed: &Bed, holders: &[Holder], step: F) {
    let done = AtomicBool::new(false);
    let probe = async {
        let mut refused = Vec::new();
        let mut rounds = 0;
        while !done.load(Ordering::SeqCst) {
            for h in holders {
                let outcome = register(&bed.engine, &h.registration_id, h.auth.clone()).await;
                if !matches!(outcome, Registration::Assigned { .. }) {
                    refused.push(format!("{} during the step: {outcome:?}", h.label));
                }
            }
            rounds += 1;
        }
        (refused, rounds)
    };
    let drive = async {
        step.await;
        done.store(true, Ordering::SeqCst);
    };
    let ((mut refused, rounds), ()) = tokio::join!(probe, drive);
    for h in holders {
        let outcome = register(&bed.engine, &h.registration_id, h.auth.clone()).await;
        if !matches!(outcome, Registration::Assigned { .. }) {
            refused.push(format!("{} after the step: {outcome:?}", h.label));
        }
    }
    assert!(
        refused.is_empty(),
        "devices holding a current credential were refused ({rounds} probe rounds): {refused:#?}"
    );
}

/// Waits until `name`'s `status.credentials` satisfies `done`, and returns them.
async fn wait_credentials<K>(bed: &Bed, name: &str, done: impl Fn(&CredentialStatus) -> bool) -> CredentialStatus
where
    K: crate::support::Namespaced,
{
    let api = bed.api::<K>();
    let what = format!("{} {name} to report the expected credentials", K::kind(&()));
    eventually(&what, Duration::from_secs(60), || {
        let api = api.clone();
        let done = &done;
        async move {
            let obj = api.get_opt(name).await.ok().flatten()?;
            let value = serde_json::to_value(&obj).ok()?;
            let credentials: CredentialStatus =
                serde_json::from_value(value.pointer("/status/credentials")?.clone()).ok()?;
            done(&credentials).then_some(credentials)
        }
    })
    .await
}

/// The (primary, secondary) keys of a key Secret.
async fn keys(bed: &Bed, secret: &str) -> (String, String) {
    let secret = bed.api::<Secret>().get(secret).await.expect("the key Secret exists");
    let data = secret.data.expect("data");
    let text = |k: &str| String::from_utf8(data[k].0.clone()).expect("UTF-8 key");
    (text("primaryKey"), text("secondaryKey"))
}

/// The (primary, secondary) keys of device `device_id`'s identity in the hub it was assigned to.
async fn hub_keys(bed: &Bed, device_id: &str) -> (Option<String>, Option<String>) {
    let Registration::Assigned { hub, .. } =
        register(&bed.engine, device_id, with_key(&keys(bed, &format!("{device_id}-keys")).await.0)).await
    else {
        panic!("the device is refused");
    };
    let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("a known hub");
    let device = bed.engine.hub(index).get_device(device_id).await.expect("the device identity exists");
    let keys = device.authentication.and_then(|a| a.symmetric_key).unwrap_or_default();
    let text = |k: Option<SecretValue>| k.map(|k| k.expose().to_string());
    (text(keys.primary_key), text(keys.secondary_key))
}

fn key_id(key: &str) -> String {
    rotation::key_id(&SecretValue::new(key.to_string()))
}

/// A valid DPS key (base64 of 32 bytes) that differs for each `seed`.
fn test_key(seed: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([seed; 32])
}

async fn annotate<K>(bed: &Bed, name: &str, value: &str)
where
    K: crate::support::Namespaced,
{
    let patch = json!({ "metadata": { "annotations": { ROTATE_KEY: value } } });
    bed.api::<K>().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotated");
}

async fn set_secret_key(bed: &Bed, secret: &str, slot: &str, key: &str) {
    let patch = json!({ "stringData": { slot: key } });
    bed.api::<Secret>().patch(secret, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("Secret patched");
}

#[tokio::test]
async fn rolling_symmetric_keys_one_slot_at_a_time_never_refuses_a_device_holding_a_current_key() {
    let bed = Bed::start("rot-keys").await;
    let (name, secret) = ("valve-4", "valve-4-keys");
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &symmetric_enrollment(name, secret, true, json!({}))).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>(name).await;
    let (p0, s0) = keys(&bed, secret).await;
    let first = wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.generation == 1).await;
    assert_eq!((first.primary, first.secondary), (Some(key_id(&p0)), Some(key_id(&s0))));

    // Step 1: a new secondary. The fleet is on the primary, which must keep working throughout.
    let step = async {
        annotate::<IndividualEnrollment>(&bed, name, "secondary").await;
        wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.generation == 2).await;
    };
    never_refused(&bed, &[holder("the primary key", name, with_key(&p0))], step).await;
    let (p, s1) = keys(&bed, secret).await;
    assert_eq!(p, p0, "rotating the secondary leaves the primary alone");
    assert_ne!(s1, s0, "the secondary is new");
    let now = wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.generation == 2).await;
    assert_eq!((now.primary, now.secondary), (Some(key_id(&p0)), Some(key_id(&s1))));
    assert!(register(&bed.engine, name, with_key(&s0)).await.refused_at_register(), "the old secondary is gone");

    // Devices move to the new secondary; then step 2 replaces the primary while they keep registering.
    let moved = || holder("the new secondary key", name, with_key(&s1));
    let step = async {
        annotate::<IndividualEnrollment>(&bed, name, "primary").await;
        wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.generation == 3).await;
    };
    never_refused(&bed, &[moved()], step).await;
    let (p1, s) = keys(&bed, secret).await;
    assert_eq!(s, s1, "rotating the primary leaves the secondary alone");
    assert_ne!(p1, p0);
    never_refused(&bed, &[holder("the new primary key", name, with_key(&p1)), moved()], async {}).await;
    assert!(register(&bed.engine, name, with_key(&p0)).await.refused_at_register(), "the old primary is gone");
    // A registration rewrites the hub identity's keys with the entry's current pair, as DPS does; until
    // the device registers again, its identity keeps the pair of its last registration.
    assert_eq!(hub_keys(&bed, name).await, (Some(p1.clone()), Some(s1.clone())));

    let reasons = event_reasons(&bed, "IndividualEnrollment", name).await;
    let rotated = reasons.iter().filter(|r| *r == rotation::CREDENTIAL_ROTATED).count();
    assert_eq!(rotated, 2, "one CredentialRotated event per step: {reasons:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn group_key_rotation_keeps_devices_with_either_derived_key_registering() {
    let bed = Bed::start("rot-group").await;
    let (name, secret_name) = ("meters", "meters-keys");
    let (g0, h0, h1) = (test_key(1), test_key(2), test_key(3));
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": secret_name },
        "stringData": { "primaryKey": g0, "secondaryKey": h0 }
    }))
    .expect("Secret");
    bed.api::<Secret>().create(&PostParams::default(), &secret).await.expect("Secret created");
    let group: EnrollmentGroup = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "EnrollmentGroup",
        "metadata": { "name": name },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": secret_name } },
        }
    }))
    .expect("a valid EnrollmentGroup");
    bed.api::<EnrollmentGroup>().create(&PostParams::default(), &group).await.expect("created");
    bed.wait_ready::<EnrollmentGroup>(name).await;
    wait_credentials::<EnrollmentGroup>(&bed, name, |c| c.generation == 1).await;

    // Step 1: the referenced Secret gets a new secondary; devices deriving from the primary keep going.
    let on_primary = [holder("meter-1 (primary)", "meter-1", with_group_key(&g0))];
    let step = async {
        set_secret_key(&bed, secret_name, "secondaryKey", &h1).await;
        wait_credentials::<EnrollmentGroup>(&bed, name, |c| c.secondary == Some(key_id(&h1))).await;
    };
    never_refused(&bed, &on_primary, step).await;
    assert!(register(&bed.engine, "meter-2", with_group_key(&h0)).await.refused_at_register());

    // Devices derive from the new secondary; step 2 asks the operator for a new primary (the annotation
    // works on a Secret the user made, too).
    let on_secondary = [holder("meter-1 (new secondary)", "meter-1", with_group_key(&h1))];
    let step = async {
        annotate::<EnrollmentGroup>(&bed, name, "primary").await;
        wait_credentials::<EnrollmentGroup>(&bed, name, |c| c.generation == 3).await;
    };
    never_refused(&bed, &on_secondary, step).await;
    let (g1, secondary) = keys(&bed, secret_name).await;
    assert_eq!(secondary, h1, "only the primary was replaced");
    assert_ne!(g1, g0);
    let both = [
        holder("meter-2 (new primary)", "meter-2", with_group_key(&g1)),
        holder("meter-2 (new secondary)", "meter-2", with_group_key(&h1)),
    ];
    never_refused(&bed, &both, async {}).await;
    assert!(register(&bed.engine, "meter-3", with_group_key(&g0)).await.refused_at_register());
    let last = wait_credentials::<EnrollmentGroup>(&bed, name, |c| c.generation == 3).await;
    assert_eq!((last.primary, last.secondary), (Some(key_id(&g1)), Some(key_id(&h1))));
    bed.ns.delete().await;
}

fn x509_enrollment(name: &str, primary: &TestLeaf, secondary: Option<&TestLeaf>) -> serde_json::Value {
    let mut certificates = json!({ "primary": { "pem": primary.cert_pem } });
    if let Some(s) = secondary {
        certificates["secondary"] = json!({ "pem": s.cert_pem });
    }
    json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": name },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "x509": { "clientCertificates": certificates } },
        }
    })
}

fn thumbprint(leaf: &TestLeaf) -> String {
    let cert = dps_operator::controller::certificate::Certificate::parse(&leaf.cert_pem, "test").expect("parses");
    rotation::certificate_id(&cert)
}

#[tokio::test]
async fn adding_promoting_and_removing_a_secondary_certificate_never_refuses_either_certificate() {
    let bed = Bed::start("rot-x509").await;
    let ca = TestCa::root("rot-x509-root");
    let name = "camera-9";
    let (old, new) = (ca.leaf(name), ca.leaf(name));
    let api = bed.api::<IndividualEnrollment>();
    let manifest: IndividualEnrollment = serde_json::from_value(x509_enrollment(name, &old, None)).expect("manifest");
    api.create(&PostParams::default(), &manifest).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>(name).await;
    let apply = |value: serde_json::Value| {
        let api = api.clone();
        async move {
            let spec = json!({ "spec": value["spec"] });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&spec)).await.expect("spec changed");
        }
    };
    let both = || {
        [
            holder("the old certificate", name, with_certificate(&old)),
            holder("the new certificate", name, with_certificate(&new)),
        ]
    };

    // Step 1: add the new certificate as secondary; the old one must keep working throughout.
    let step = async {
        apply(x509_enrollment(name, &old, Some(&new))).await;
        wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.secondary == Some(thumbprint(&new))).await;
    };
    never_refused(&bed, &[holder("the old certificate", name, with_certificate(&old))], step).await;

    // Step 2: promote it; both certificates are admitted before, during and after.
    let step = async {
        apply(x509_enrollment(name, &new, Some(&old))).await;
        wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.primary == Some(thumbprint(&new))).await;
    };
    never_refused(&bed, &both(), step).await;
    let promoted = wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.generation == 3).await;
    assert_eq!(promoted.secondary, Some(thumbprint(&old)), "the old primary is now secondary");

    // Step 3: remove the old certificate; the new one keeps working, the old one is then refused.
    let step = async {
        let mut patch = x509_enrollment(name, &new, None);
        patch["spec"]["attestation"]["x509"]["clientCertificates"]["secondary"] = serde_json::Value::Null;
        apply(patch).await;
        wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.secondary.is_none()).await;
    };
    never_refused(&bed, &[holder("the new certificate", name, with_certificate(&new))], step).await;
    assert!(register(&bed.engine, name, with_certificate(&old)).await.refused_at_register());
    let reasons = event_reasons(&bed, "IndividualEnrollment", name).await;
    assert_eq!(reasons.iter().filter(|r| *r == rotation::CREDENTIAL_ROTATED).count(), 3, "{reasons:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn rolling_a_group_signing_certificate_keeps_devices_of_both_intermediates_registering() {
    let bed = Bed::start("rot-group-x509").await;
    let root = TestCa::root("rot-group-root");
    let (old_ca, new_ca) = (root.intermediate("rot-old-ica"), root.intermediate("rot-new-ica"));
    let (old_device, new_device) = (old_ca.leaf("sensor-old"), new_ca.leaf("sensor-new"));
    let name = "sensors";
    let manifest = |primary: &TestCa, secondary: Option<&TestCa>| {
        let mut pair = json!({ "primary": { "pem": primary.cert_pem() } });
        pair["secondary"] = secondary.map_or(serde_json::Value::Null, |s| json!({ "pem": s.cert_pem() }));
        json!({ "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "x509": { "signingCertificates": pair } },
        } })
    };
    let group: EnrollmentGroup = serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "EnrollmentGroup",
        "metadata": { "name": name },
        "spec": manifest(&old_ca, None)["spec"],
    }))
    .expect("a valid EnrollmentGroup");
    let api = bed.api::<EnrollmentGroup>();
    api.create(&PostParams::default(), &group).await.expect("created");
    bed.wait_ready::<EnrollmentGroup>(name).await;
    let set = |value: serde_json::Value| {
        let api = api.clone();
        async move {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&value)).await.expect("spec changed");
        }
    };
    let ca_id = |ca: &TestCa| {
        let cert = dps_operator::controller::certificate::Certificate::parse(&ca.cert_pem(), "ca").expect("parses");
        rotation::certificate_id(&cert)
    };
    let old = || holder("a device of the old intermediate", "sensor-old", with_certificate(&old_device));
    let new = || holder("a device of the new intermediate", "sensor-new", with_certificate(&new_device));

    let step = async {
        set(manifest(&old_ca, Some(&new_ca))).await;
        wait_credentials::<EnrollmentGroup>(&bed, name, |c| c.secondary == Some(ca_id(&new_ca))).await;
    };
    never_refused(&bed, &[old()], step).await;
    let step = async {
        set(manifest(&new_ca, Some(&old_ca))).await;
        wait_credentials::<EnrollmentGroup>(&bed, name, |c| c.primary == Some(ca_id(&new_ca))).await;
    };
    never_refused(&bed, &[old(), new()], step).await;
    let step = async {
        set(manifest(&new_ca, None)).await;
        wait_credentials::<EnrollmentGroup>(&bed, name, |c| c.secondary.is_none()).await;
    };
    never_refused(&bed, &[new()], step).await;
    assert!(register(&bed.engine, "sensor-old", with_certificate(&old_device)).await.refused_at_register());
    bed.ns.delete().await;
}

#[tokio::test]
async fn status_names_the_active_credentials_without_key_material() {
    let bed = Bed::start("rot-status").await;
    let (name, secret_name) = ("gauge-2", "gauge-2-keys");
    let (primary, secondary, replacement) = (test_key(7), test_key(8), test_key(9));
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": secret_name },
        "stringData": { "primaryKey": primary, "secondaryKey": secondary }
    }))
    .expect("Secret");
    bed.api::<Secret>().create(&PostParams::default(), &secret).await.expect("Secret created");
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &symmetric_enrollment(name, secret_name, false, json!({})))
        .await
        .expect("created");
    bed.wait_ready::<IndividualEnrollment>(name).await;
    let first = wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.generation == 1).await;
    assert_eq!((first.primary.clone(), first.secondary.clone()), (Some(key_id(&primary)), Some(key_id(&secondary))));

    set_secret_key(&bed, secret_name, "secondaryKey", &replacement).await;
    let second = wait_credentials::<IndividualEnrollment>(&bed, name, |c| c.generation == 2).await;
    assert_eq!(second.primary, first.primary, "the primary is still the same key");
    assert_eq!(second.secondary, Some(key_id(&replacement)));

    let status = serde_json::to_string(&api.get(name).await.expect("enrollment").status).expect("JSON");
    let events = bed.api::<Event>().list(&ListParams::default()).await.expect("events");
    let notes: Vec<String> = events
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect();
    let rotated: Vec<&String> = notes.iter().filter(|n| n.starts_with(rotation::CREDENTIAL_ROTATED)).collect();
    assert_eq!(rotated.len(), 1, "{notes:#?}");
    assert!(rotated[0].contains("secondary") && rotated[0].contains(&key_id(&replacement)), "{}", rotated[0]);
    for key in [&primary, &secondary, &replacement] {
        assert!(!status.contains(key.as_str()), "status holds a key: {status}");
        assert!(notes.iter().all(|n| !n.contains(key.as_str())), "an event holds a key: {notes:#?}");
    }
    let log = bed.operator.log();
    for key in [&primary, &secondary, &replacement] {
        assert!(!log.contains(key.as_str()), "the operator log holds a key");
    }
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_unknown_rotation_request_stalls_the_resource_and_leaves_the_keys_alone() {
    let bed = Bed::start("rot-invalid").await;
    let (name, secret) = ("pump-8", "pump-8-keys");
    let api = bed.api::<IndividualEnrollment>();
    api.create(&PostParams::default(), &symmetric_enrollment(name, secret, true, json!({}))).await.expect("created");
    bed.wait_ready::<IndividualEnrollment>(name).await;
    let before = keys(&bed, secret).await;
    annotate::<IndividualEnrollment>(&bed, name, "both").await;
    let (reason, message) = crate::controller_inputs::stalled_reason::<IndividualEnrollment>(&bed, name).await;
    assert_eq!(reason, "InvalidRotationRequest", "{message}");
    assert!(message.contains(ROTATE_KEY), "{message}");
    assert_eq!(keys(&bed, secret).await, before, "no key was replaced");
    bed.ns.delete().await;
}
