//! Every revocation scenario of the two seed procedures, as shipped in examples/ and examples/revoke/:
//! applied with the real `kubectl` into a namespace served by the operator and connected to the engine,
//! each checked with a device registering through the engine as a real one would.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment};
use dps_operator::azure::wire::{AttestationMechanism, DeviceStatus, ProvisioningStatus};

use crate::support::certs::TestLeaf;
use crate::support::device::{Registration, register, with_certificate, with_key};
use crate::support::kubectl;
use crate::support::operator::Bed;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Runs `kubectl <verb> -n <test namespace> -f examples/<file>` for each file, failing the test on error.
fn kubectl_files(bed: &Bed, verb: &[&str], files: &[&str]) {
    for file in files {
        let output = kubectl()
            .args(verb)
            .args(["-n", &bed.ns.name, "-f"])
            .arg(examples_dir().join(file))
            .output()
            .expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl {verb:?} -f examples/{file} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn apply(bed: &Bed, files: &[&str]) {
    kubectl_files(bed, &["apply"], files);
}

/// A device's shipped certificate chain and key (examples/certs/).
fn device(name: &str) -> TestLeaf {
    let read = |ext: &str| {
        std::fs::read_to_string(examples_dir().join("certs").join(format!("{name}.{ext}"))).expect("shipped file")
    };
    let chain_pem = read("pem");
    let cert_pem = chain_pem.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap_or_default().to_string();
    TestLeaf { cert_pem, key_pem: read("key"), chain_pem }
}

async fn register_x509(bed: &Bed, name: &str) -> Registration {
    register(&bed.engine, name, with_certificate(&device(name))).await
}

async fn primary_key(bed: &Bed, secret: &str) -> String {
    let secret = bed.api::<Secret>().get(secret).await.expect("the key Secret exists");
    let bytes = secret.data.expect("data")["primaryKey"].0.clone();
    String::from_utf8(bytes).expect("UTF-8 key")
}

/// The status of `device_id` in the hub whose host name is `hub`.
async fn hub_device_status(bed: &Bed, hub: &str, device_id: &str) -> Option<DeviceStatus> {
    let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("a known hub");
    bed.engine.hub(index).get_device(device_id).await.expect("the hub device exists").status
}

/// Group fleet-intermediate as someone else created it in DPS (the portal, another tool): the blocking
/// examples work against any group, whoever manages it.
async fn fleet_group_created_outside_kubernetes(bed: &Bed) {
    let ca = std::fs::read_to_string(examples_dir().join("certs/fleet-intermediate-ca.pem")).expect("CA file");
    let group = dps_operator::azure::wire::EnrollmentGroup {
        enrollment_group_id: "fleet-intermediate".into(),
        attestation: AttestationMechanism::x509_signing_certificate(ca, None),
        provisioning_status: Some(ProvisioningStatus::Enabled),
        ..Default::default()
    };
    bed.engine.dps().create_enrollment_group(&group).await.expect("group created in DPS");
}

#[test]
fn the_certificate_configmaps_hold_the_same_certificates_as_the_files_the_simulator_uses() {
    let text = std::fs::read_to_string(examples_dir().join("05-certificates.yaml")).expect("05-certificates.yaml");
    let maps: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .collect();
    let data = |name: &str, key: &str| -> String {
        let map = maps.iter().find(|m| m["metadata"]["name"] == name).unwrap_or_else(|| panic!("no ConfigMap {name}"));
        map["data"][key].as_str().expect("a string").to_string()
    };
    let ca = std::fs::read_to_string(examples_dir().join("certs/fleet-intermediate-ca.pem")).expect("CA file");
    assert_eq!(data("fleet-intermediate-ca", "ca.crt"), ca);
    assert_eq!(data("sensor-0042-certificate", "tls.crt"), device("sensor-0042").cert_pem);
    assert_eq!(data("sensor-0978-certificate", "tls.crt"), device("sensor-0978").cert_pem);
}

// --- IndividualEnrollment controller ---

#[tokio::test]
async fn disabling_the_individual_enrollment_example_refuses_its_device() {
    let bed = Bed::start("ex-ienr-off").await;
    apply(&bed, &["10-individual-enrollment-symmetric-key.yaml"]);
    bed.wait_ready::<IndividualEnrollment>("thermostat-17").await;
    let key = primary_key(&bed, "thermostat-17-keys").await;
    let admitted = register(&bed.engine, "thermostat-17", with_key(&key)).await;
    assert!(matches!(admitted, Registration::Assigned { .. }), "{admitted:?}");

    apply(&bed, &["revoke/individual-disable.yaml"]);
    bed.wait_ready::<IndividualEnrollment>("thermostat-17").await;
    let refused = register(&bed.engine, "thermostat-17", with_key(&key)).await;
    assert!(refused.disabled(), "a disabled entry ends the registration `disabled`: {refused:?}");

    apply(&bed, &["10-individual-enrollment-symmetric-key.yaml"]);
    bed.wait_ready::<IndividualEnrollment>("thermostat-17").await;
    let again = register(&bed.engine, "thermostat-17", with_key(&key)).await;
    assert!(matches!(again, Registration::Assigned { .. }), "re-enabled, the device is admitted: {again:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn deleting_the_individual_enrollment_example_disables_its_hub_device_and_refuses_it() {
    let bed = Bed::start("ex-ienr-del").await;
    apply(&bed, &["10-individual-enrollment-symmetric-key.yaml"]);
    bed.wait_ready::<IndividualEnrollment>("thermostat-17").await;
    let key = primary_key(&bed, "thermostat-17-keys").await;
    let Registration::Assigned { hub, device_id } = register(&bed.engine, "thermostat-17", with_key(&key)).await else {
        panic!("the enrolled device was refused");
    };

    kubectl_files(&bed, &["delete", "--wait=false"], &["10-individual-enrollment-symmetric-key.yaml"]);
    bed.wait_gone::<IndividualEnrollment>("thermostat-17").await;
    assert!(bed.engine.dps().get_enrollment("thermostat-17").await.expect_err("deleted").is_not_found());
    assert_eq!(hub_device_status(&bed, &hub, &device_id).await, Some(DeviceStatus::Disabled));
    let refused = register(&bed.engine, "thermostat-17", with_key(&key)).await;
    assert!(refused.refused_at_register(), "no entry left: refused at register: {refused:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn the_x509_individual_enrollment_example_admits_the_device_with_the_shipped_certificate() {
    let bed = Bed::start("ex-ienr-x509").await;
    apply(&bed, &["05-certificates.yaml", "11-individual-enrollment-x509.yaml"]);
    bed.wait_ready::<IndividualEnrollment>("sensor-0042").await;
    let admitted = register_x509(&bed, "sensor-0042").await;
    assert!(matches!(admitted, Registration::Assigned { .. }), "{admitted:?}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn blocking_a_group_device_with_its_certificate_refuses_that_device_only() {
    let bed = Bed::start("ex-block-cert").await;
    fleet_group_created_outside_kubernetes(&bed).await;
    register_x509(&bed, "sensor-0978").await.hub();

    apply(&bed, &["05-certificates.yaml", "revoke/block-group-device-with-certificate.yaml"]);
    bed.wait_ready::<IndividualEnrollment>("block-sensor-0978").await;
    let blocked = register_x509(&bed, "sensor-0978").await;
    assert!(blocked.disabled(), "the disabled entry decides before the group: {blocked:?}");
    register_x509(&bed, "sensor-0980").await.hub();
    bed.ns.delete().await;
}

#[tokio::test]
async fn blocking_a_group_device_without_its_certificate_refuses_that_device_only() {
    let bed = Bed::start("ex-block-key").await;
    fleet_group_created_outside_kubernetes(&bed).await;
    register_x509(&bed, "sensor-0979").await.hub();

    apply(&bed, &["revoke/block-group-device-without-certificate.yaml"]);
    bed.wait_ready::<IndividualEnrollment>("block-sensor-0979").await;
    let blocked = register_x509(&bed, "sensor-0979").await;
    assert!(blocked.disabled(), "a disabled symmetric-key entry blocks the X.509 device too: {blocked:?}");
    register_x509(&bed, "sensor-0980").await.hub();
    bed.ns.delete().await;
}

// --- EnrollmentGroup controller ---

#[tokio::test]
async fn disabling_the_group_example_refuses_its_devices() {
    let bed = Bed::start("ex-egrp-off").await;
    apply(&bed, &["05-certificates.yaml", "20-enrollment-group-x509.yaml"]);
    bed.wait_ready::<EnrollmentGroup>("fleet-intermediate").await;
    register_x509(&bed, "sensor-0980").await.hub();

    apply(&bed, &["revoke/group-disable.yaml"]);
    bed.wait_ready::<EnrollmentGroup>("fleet-intermediate").await;
    for name in ["sensor-0980", "sensor-0977"] {
        let refused = register_x509(&bed, name).await;
        assert!(refused.disabled(), "{name} is refused by the disabled group: {refused:?}");
    }
    bed.ns.delete().await;
}

#[tokio::test]
async fn deleting_the_group_example_disables_its_hub_devices_and_refuses_them() {
    let bed = Bed::start("ex-egrp-del").await;
    apply(&bed, &["05-certificates.yaml", "20-enrollment-group-x509.yaml"]);
    bed.wait_ready::<EnrollmentGroup>("fleet-intermediate").await;
    let Registration::Assigned { hub, device_id } = register_x509(&bed, "sensor-0980").await else {
        panic!("the group's device was refused");
    };

    let deleted = kubectl()
        .args(["delete", "--wait=false", "-n", &bed.ns.name, "enrollmentgroup", "fleet-intermediate"])
        .output()
        .expect("kubectl runs");
    assert!(deleted.status.success(), "kubectl delete failed: {}", String::from_utf8_lossy(&deleted.stderr));
    bed.wait_gone::<EnrollmentGroup>("fleet-intermediate").await;
    let group = bed.engine.dps().get_enrollment_group("fleet-intermediate").await;
    assert!(group.is_err_and(|e| e.is_not_found()), "no higher group exists, so the group is deleted");
    assert_eq!(hub_device_status(&bed, &hub, &device_id).await, Some(DeviceStatus::Disabled));
    let refused = register_x509(&bed, "sensor-0980").await;
    assert!(refused.refused_at_register(), "no entry admits the device any more: {refused:?}");
    bed.ns.delete().await;
}

// --- DeviceDeprovision controller ---

#[tokio::test]
async fn deprovisioning_the_individual_device_example_refuses_it_then_disables_its_hub_device() {
    let bed = Bed::start("ex-deprov-ienr").await;
    apply(&bed, &["05-certificates.yaml", "11-individual-enrollment-x509.yaml"]);
    bed.wait_ready::<IndividualEnrollment>("sensor-0042").await;
    let Registration::Assigned { hub, device_id } = register_x509(&bed, "sensor-0042").await else {
        panic!("the enrolled device was refused");
    };

    apply(&bed, &["revoke/deprovision-individual-device.yaml"]);
    bed.wait_ready::<DeviceDeprovision>("retire-sensor-0042").await;
    let refused = register_x509(&bed, "sensor-0042").await;
    assert!(refused.disabled(), "its own entry is disabled: {refused:?}");
    assert_eq!(hub_device_status(&bed, &hub, &device_id).await, Some(DeviceStatus::Disabled));
    bed.ns.delete().await;
}

#[tokio::test]
async fn deprovisioning_the_group_device_example_refuses_it_disables_its_hub_device_and_admits_the_others() {
    let bed = Bed::start("ex-deprov-egrp").await;
    apply(&bed, &["05-certificates.yaml", "20-enrollment-group-x509.yaml"]);
    bed.wait_ready::<EnrollmentGroup>("fleet-intermediate").await;
    let Registration::Assigned { hub, device_id } = register_x509(&bed, "sensor-0977").await else {
        panic!("the group's device was refused");
    };

    apply(&bed, &["revoke/deprovision-group-device.yaml"]);
    bed.wait_ready::<DeviceDeprovision>("stolen-sensor-0977").await;
    let refused = register_x509(&bed, "sensor-0977").await;
    assert!(refused.disabled(), "the blocking entry refuses the device: {refused:?}");
    assert_eq!(hub_device_status(&bed, &hub, &device_id).await, Some(DeviceStatus::Disabled));
    register_x509(&bed, "sensor-0980").await.hub();
    bed.ns.delete().await;
}
