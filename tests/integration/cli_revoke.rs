//! `dps-operator revoke` as a person runs it: the built binary against the real apiserver, the engine and
//! the operator; and as `kubectl dps revoke` through kubectl's plugin lookup.

use std::path::Path;
use std::process::{Command, Output};

use kube::api::ListParams;

use dps_operator::api::DeviceDeprovision;
use dps_operator::api::device_deprovision::DeprovisionDeviceAction;
use dps_operator::azure::secret::Secret;
use dps_operator::azure::wire::{AttestationMechanism, DeviceStatus, EnrollmentGroup};

use crate::support::device::{Registration, register, with_group_key};
use crate::support::operator::{Bed, SERVICE};
use crate::support::{TestNamespace, client, ensure_crds, kubeconfig_path};

const GROUP_KEY: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";

/// Runs the binary (or `program`, e.g. kubectl) with `args` against the test cluster, off the test's runtime.
async fn run(program: &str, args: &[&str], path: Option<&Path>) -> Output {
    let program = program.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let path = path.map(|dir| {
        let inherited = std::env::var("PATH").unwrap_or_default();
        format!("{}:{inherited}", dir.display())
    });
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(program);
        command.args(&args).env("KUBECONFIG", kubeconfig_path());
        if let Some(path) = path {
            command.env("PATH", path);
        }
        command.output().expect("the command runs")
    })
    .await
    .expect("the command finished")
}

fn revoke_args<'a>(namespace: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["revoke", "-n", namespace, "--timeout", "60s"];
    args.extend_from_slice(extra);
    args
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// The phase names in the order the command printed them (the word after the elapsed time).
fn printed_phases(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let elapsed = words.next()?;
            elapsed.strip_suffix('s')?.parse::<f64>().ok()?;
            words.next().map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn revoke_prints_each_phase_and_the_device_is_refused_afterwards() {
    let bed = Bed::start("cli-revoke").await;
    let group = EnrollmentGroup {
        enrollment_group_id: "kiosks".into(),
        attestation: AttestationMechanism::symmetric_key(Some(Secret::new(GROUP_KEY.to_string())), None),
        ..EnrollmentGroup::default()
    };
    bed.engine.dps().create_enrollment_group(&group).await.expect("group enrolled");
    let hub = register(&bed.engine, "kiosk-0007", with_group_key(GROUP_KEY)).await.hub().to_string();

    let args = revoke_args(&bed.ns.name, &["--registration-id", "kiosk-0007", "--reason", "stolen from site 4"]);
    let out = run(env!("CARGO_BIN_EXE_dps-operator"), &args, None).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "revoke failed:\n{stdout}\n{}", text(&out.stderr));
    assert_eq!(printed_phases(&stdout), ["Pending", "Revoking", "Revoked", "Deregistering", "Completed"], "{stdout}");
    assert!(stdout.contains(&format!("assigned hub: {hub} (device kiosk-0007)")), "{stdout}");

    let again = register(&bed.engine, "kiosk-0007", with_group_key(GROUP_KEY)).await;
    assert!(!matches!(again, Registration::Assigned { .. }), "the revoked device registered: {again:?}");
    let index = bed.engine.info.hubs.iter().position(|h| h.host_name == hub).expect("a known hub");
    let device = bed.engine.hub(index).get_device("kiosk-0007").await.expect("hub device");
    assert_eq!(device.status, Some(DeviceStatus::Disabled));
    assert_eq!(device.status_reason.as_deref(), Some("stolen from site 4"));

    // Run again, the command follows the order already given and reports the attempt refused since.
    let out = run(env!("CARGO_BIN_EXE_dps-operator"), &args, None).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "second revoke failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("already exists; following it"), "{stdout}");
    assert!(stdout.contains("refused attempts: 1 "), "{stdout}");
    bed.ns.delete().await;
}

#[tokio::test]
async fn revoke_exits_non_zero_with_the_condition_message_when_the_deprovision_stalls() {
    let bed = Bed::start("cli-revoke-stall").await;
    let args = revoke_args(
        &bed.ns.name,
        &["--registration-id", "kiosk-0008", "--reason", "lost", "--provisioning-service", "no-such-dps"],
    );
    let out = run(env!("CARGO_BIN_EXE_dps-operator"), &args, None).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "revoke succeeded:\n{stdout}");
    assert!(stderr.contains("ProvisioningServiceNotFound"), "{stderr}");
    assert!(stderr.contains(&format!("ProvisioningService {}/no-such-dps does not exist", bed.ns.name)), "{stderr}");
    assert!(printed_phases(&stdout).contains(&"Failed".to_string()), "{stdout}");
    bed.ns.delete().await;
}

/// Parses a `--dry-run` manifest and checks it is the order asked for.
fn check_manifest(stdout: &str, namespace: &str) {
    let order: DeviceDeprovision = serde_yaml_ng::from_str(stdout).expect("a DeviceDeprovision manifest");
    assert_eq!(order.metadata.name.as_deref(), Some("revoke-kiosk-0009"));
    assert_eq!(order.metadata.namespace.as_deref(), Some(namespace));
    assert_eq!(order.spec.registration_id, "kiosk-0009");
    assert_eq!(order.spec.provisioning_service_ref.name, SERVICE);
    assert_eq!(order.spec.enrollment_group_ref.map(|g| g.name).as_deref(), Some("kiosks"));
    assert_eq!(order.spec.device, DeprovisionDeviceAction::Delete);
    assert_eq!(order.spec.reason.as_deref(), Some("returned to vendor"));
}

const DRY_RUN: [&str; 10] = [
    "--registration-id",
    "kiosk-0009",
    "--group",
    "kiosks",
    "--delete-device",
    "--reason",
    "returned to vendor",
    "--provisioning-service",
    SERVICE,
    "--dry-run",
];

#[tokio::test]
async fn revoke_dry_run_prints_the_manifest_and_creates_nothing() {
    let client = client().await;
    ensure_crds(&client).await;
    let ns = TestNamespace::create(&client, "cli-dry-run").await;
    let out = run(env!("CARGO_BIN_EXE_dps-operator"), &revoke_args(&ns.name, &DRY_RUN), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    check_manifest(&text(&out.stdout), &ns.name);
    let api = kube::Api::<DeviceDeprovision>::namespaced(client.clone(), &ns.name);
    assert!(api.list(&ListParams::default()).await.expect("list").items.is_empty(), "dry run created an order");
    ns.delete().await;
}

#[tokio::test]
async fn kubectl_dps_plugin_name_runs_revoke() {
    let dir = std::env::temp_dir().join(format!("kubectl-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let link = dir.join("kubectl-dps");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dps-operator"), &link).expect("symlink");

    let mut args = vec!["dps"];
    args.extend(revoke_args("fleet", &DRY_RUN));
    let out = run("kubectl", &args, Some(&dir)).await;
    assert!(out.status.success(), "kubectl dps revoke failed: {}", text(&out.stderr));
    check_manifest(&text(&out.stdout), "fleet");

    // Help names the command the way it was typed.
    let help = run("kubectl", &["dps", "revoke", "--help"], Some(&dir)).await;
    assert!(text(&help.stdout).contains("Usage: kubectl dps revoke"), "{}", text(&help.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}
