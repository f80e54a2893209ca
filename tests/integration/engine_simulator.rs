//! `dps-operator device register`: the simulator the demo and tests use to prove revocation.

use std::process::Command;

use dps_operator::azure::secret::Secret;
use dps_operator::azure::wire::{AttestationMechanism, IndividualEnrollment, ProvisioningStatus};

use crate::support::certs::TestCa;
use crate::support::engine::Engine;

const KEY: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";

fn simulator(engine: &Engine, registration_id: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dps-operator"));
    command.args(["device", "register", "--engine-json"]).arg(engine.engine_json());
    command.args(["--registration-id", registration_id, "--timeout-secs", "30"]);
    command
}

#[tokio::test]
async fn simulator_prints_the_assigned_hub_then_exits_non_zero_with_the_reason_once_revoked() {
    let engine = Engine::start();
    let dps = engine.dps();
    let enrollment = IndividualEnrollment {
        registration_id: "demo-device".into(),
        attestation: AttestationMechanism::symmetric_key(
            Some(Secret::new(KEY.to_string())),
            Some(Secret::new(KEY.to_string())),
        ),
        ..IndividualEnrollment::default()
    };
    let created = dps.create_enrollment(&enrollment).await.expect("enrolled");

    let admitted = simulator(&engine, "demo-device").env("DPS_DEVICE_SYMMETRIC_KEY", KEY).output().expect("runs");
    let stdout = String::from_utf8_lossy(&admitted.stdout);
    assert!(admitted.status.success(), "registration failed: {stdout} {}", String::from_utf8_lossy(&admitted.stderr));
    let hubs: Vec<_> = engine.info.hubs.iter().map(|h| h.host_name.as_str()).collect();
    assert!(hubs.iter().any(|h| stdout.contains(h)), "no assigned hub in: {stdout}");
    assert!(stdout.contains("demo-device"), "no device ID in: {stdout}");
    assert!(!stdout.contains(KEY), "the simulator printed the key");

    let mut disabled = enrollment.clone();
    disabled.provisioning_status = Some(ProvisioningStatus::Disabled);
    dps.update_enrollment(&disabled, created.etag.as_deref()).await.expect("disabled");
    let refused = simulator(&engine, "demo-device").env("DPS_DEVICE_SYMMETRIC_KEY", KEY).output().expect("runs");
    let said = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert!(!refused.status.success(), "a disabled device registered: {said}");
    assert!(said.to_lowercase().contains("disabled"), "the reason is not given: {said}");
    assert!(!said.contains(KEY), "the simulator printed the key");
}

#[tokio::test]
async fn simulator_registers_with_an_x509_certificate_chain() {
    let engine = Engine::start();
    let root = TestCa::root("Sim Root");
    let intermediate = root.intermediate("Sim Intermediate");
    let group = dps_operator::azure::wire::EnrollmentGroup {
        enrollment_group_id: "sim".into(),
        attestation: AttestationMechanism::x509_signing_certificate(intermediate.cert_pem(), None),
        ..Default::default()
    };
    engine.dps().create_enrollment_group(&group).await.expect("group");
    let leaf = intermediate.leaf("sim-x509-1");
    let dir = engine.data_dir.join("sim-certs");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("chain.pem"), &leaf.chain_pem).expect("chain written");
    std::fs::write(dir.join("key.pem"), &leaf.key_pem).expect("key written");
    let output = simulator(&engine, "sim-x509-1")
        .arg("--cert")
        .arg(dir.join("chain.pem"))
        .arg("--key")
        .arg(dir.join("key.pem"))
        .args(["--output", "json"])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(result["status"], "assigned");
    assert_eq!(result["deviceId"], "sim-x509-1");
}
