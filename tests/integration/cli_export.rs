//! `dps-operator export` onboarding an existing DPS: 500 entries and groups made through the engine's
//! service API, exported, applied with kubectl, adopted by the operator without one DPS write; and keys
//! never written into a manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use dps_operator::api::{EnrollmentGroup, IndividualEnrollment, ProvisioningService};
use dps_operator::azure::DpsServiceClient;
use dps_operator::azure::secret::Secret;
use dps_operator::azure::wire::{self, AttestationMechanism, BulkOperationMode, ProvisioningStatus};

use crate::support::certs::TestCa;
use crate::support::engine::Engine;
use crate::support::operator::{Bed, SERVICE};
use crate::support::{eventually, kubeconfig_path, kubectl};

/// A valid base64 key (32 bytes) that is different for every `(which, i)`.
fn key(which: &str, i: usize) -> String {
    let bytes = format!("{which}-key-of-entry-{i:06}-abcdefghijklmnopqrstuvwxyz");
    base64::engine::general_purpose::STANDARD.encode(&bytes.as_bytes()[..32])
}

fn keys(i: usize) -> AttestationMechanism {
    AttestationMechanism::symmetric_key(Some(Secret::new(key("primary", i))), Some(Secret::new(key("secondary", i))))
}

/// Settings that vary with `i`, so every mapped field is exercised by some entry.
fn vary(i: usize, hub: &str) -> wire::IndividualEnrollment {
    wire::IndividualEnrollment {
        registration_id: String::new(),
        device_id: i.is_multiple_of(4).then(|| format!("device-{i:04}")),
        iot_hubs: i.is_multiple_of(7).then(|| vec![hub.to_string()]),
        initial_twin: i.is_multiple_of(3).then(|| wire::InitialTwin {
            tags: Some(json!({"site": i % 10, "fleet": "export"})),
            properties: Some(wire::InitialTwinProperties { desired: Some(json!({"interval": i})) }),
        }),
        reprovision_policy: i
            .is_multiple_of(11)
            .then_some(wire::ReprovisionPolicy { update_hub_assignment: false, migrate_device_data: true }),
        capabilities: i.is_multiple_of(13).then_some(wire::DeviceCapabilities { iot_edge: true }),
        provisioning_status: i.is_multiple_of(5).then_some(ProvisioningStatus::Disabled),
        allocation_policy: i.is_multiple_of(17).then_some(wire::AllocationPolicy::Hashed),
        ..wire::IndividualEnrollment::default()
    }
}

fn group_of(e: wire::IndividualEnrollment, id: String, attestation: AttestationMechanism) -> wire::EnrollmentGroup {
    wire::EnrollmentGroup {
        enrollment_group_id: id,
        attestation,
        capabilities: e.capabilities,
        iot_hubs: e.iot_hubs,
        initial_twin: e.initial_twin,
        provisioning_status: e.provisioning_status,
        reprovision_policy: e.reprovision_policy,
        allocation_policy: e.allocation_policy,
        ..wire::EnrollmentGroup::default()
    }
}

/// 300 symmetric-key and 150 X.509 individual enrollments, 30 symmetric-key groups, 10 groups with a
/// signing certificate and 10 naming a CA: 500, made with bulk calls where DPS has them.
async fn fill(dps: &DpsServiceClient, hub: &str) {
    let ca = TestCa::root("export-devices-ca");
    let mut entries = Vec::new();
    for i in 0..300 {
        entries.push(wire::IndividualEnrollment {
            registration_id: format!("sym-{i:04}"),
            attestation: keys(i),
            ..vary(i, hub)
        });
    }
    for i in 0..150 {
        let id = format!("x509-{i:04}");
        entries.push(wire::IndividualEnrollment {
            attestation: AttestationMechanism::x509_client_certificate(ca.leaf(&id).cert_pem, None),
            registration_id: id,
            ..vary(i, hub)
        });
    }
    let result = dps.bulk_enrollments_chunked(BulkOperationMode::Create, &entries).await.expect("bulk create");
    assert!(result.is_successful, "{:?}", result.errors);
    let mut groups = Vec::new();
    for i in 0..30 {
        groups.push(group_of(vary(i, hub), format!("sym-group-{i:02}"), keys(1000 + i)));
    }
    for i in 0..10 {
        let root = TestCa::root(&format!("export-group-ca-{i}"));
        let signing = AttestationMechanism::x509_signing_certificate(root.cert_pem(), None);
        groups.push(group_of(vary(i, hub), format!("x509-group-{i:02}"), signing));
        let reference = AttestationMechanism::x509_ca_reference(format!("verified-ca-{i}"), None);
        groups.push(group_of(vary(i + 1, hub), format!("ca-group-{i:02}"), reference));
    }
    let result = dps.bulk_enrollment_groups_chunked(BulkOperationMode::Create, &groups).await.expect("bulk groups");
    assert!(result.is_successful, "{:?}", result.errors);
}

/// Every entry's and group's etag: DPS changes it at every write.
async fn etags(dps: &DpsServiceClient) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for e in dps.query_all_enrollments("SELECT * FROM enrollments", None).await.expect("query") {
        out.insert(format!("enrollment/{}", e.registration_id), e.etag);
    }
    for g in dps.query_all_enrollment_groups("SELECT * FROM enrollmentGroups", None).await.expect("query") {
        out.insert(format!("group/{}", g.enrollment_group_id), g.etag);
    }
    out
}

async fn run(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dps-operator"))
            .args(&args)
            .env("KUBECONFIG", kubeconfig_path())
            .envs(env)
            .output()
            .expect("the export runs")
    })
    .await
    .expect("the export finished")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Backend requests of the operator that change something (per `/metrics`), and those that only read.
async fn backend_writes_and_reads(bed: &Bed) -> (u64, u64) {
    let address = bed.operator.metrics_address().await;
    let body = reqwest::get(format!("http://{address}/metrics")).await.expect("metrics").text().await.expect("text");
    let (mut writes, mut reads) = (0, 0);
    for line in body.lines().filter(|l| l.starts_with("dps_operator_backend_requests_total{")) {
        let Some((series, count)) = line.rsplit_once(' ') else { continue };
        let count: u64 = count.parse().unwrap_or(0);
        let operation = series.split("operation=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default();
        let read = operation.starts_with("GET ")
            || operation.ends_with("/query")
            || operation.ends_with("/attestationmechanism");
        if read { reads += count } else { writes += count }
    }
    (writes, reads)
}

fn ready_at_generation(value: &Value) -> bool {
    let generation = value.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = value.pointer("/status/observedGeneration").and_then(Value::as_i64);
    let ready = value
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    ready && observed == generation
}

/// Names of the resources of `K` not yet Ready at their generation.
async fn not_ready<K>(bed: &Bed) -> Vec<String>
where
    K: crate::support::Namespaced,
{
    let list = bed.api::<K>().list(&ListParams::default()).await.expect("list");
    list.items
        .iter()
        .filter_map(|o| {
            let value = serde_json::to_value(o).ok()?;
            (!ready_at_generation(&value)).then(|| o.meta().name.clone().unwrap_or_default())
        })
        .collect()
}

fn apply(dir: &Path, namespace: &str) {
    let out = kubectl().args(["apply", "-n", namespace, "-f"]).arg(dir).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl apply -f {}: {}", dir.display(), text(&out.stderr));
}

#[tokio::test]
async fn exported_manifests_adopt_500_entries_with_zero_dps_writes() {
    let bed = Bed::start("cli-export").await;
    // The engine has no quota; the default 1,000 a minute would only make the test slower.
    let limits = json!({"spec": {"rateLimits": {"serviceOperationsPerMinute": 100000}}});
    bed.api::<ProvisioningService>()
        .patch(SERVICE, &PatchParams::default(), &Patch::Merge(limits))
        .await
        .expect("rate limits lifted");
    let dps = bed.engine.dps();
    fill(&dps, &bed.engine.info.hubs[0].host_name).await;
    let before = etags(&dps).await;
    assert_eq!(before.len(), 500);

    let dir = out_dir("export-500");
    let args = ["export", "--provisioning-service", SERVICE, "-n", &bed.ns.name, "--write-secrets", "--out-dir"];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push(dir.display().to_string());
    let out = run(args, vec![]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "export failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("wrote 450 IndividualEnrollments and 50 EnrollmentGroups"), "{stdout}");
    assert!(stdout.contains("wrote 330 key Secrets"), "{stdout}");
    assert!(!stdout.contains("create "), "nothing should be left to create:\n{stdout}");

    let (writes_before, _) = backend_writes_and_reads(&bed).await;
    apply(&dir.join("secrets"), &bed.ns.name);
    apply(&dir, &bed.ns.name);
    eventually("all 500 exported resources to be Ready", Duration::from_secs(600), || async {
        let mut waiting = not_ready::<IndividualEnrollment>(&bed).await;
        waiting.extend(not_ready::<EnrollmentGroup>(&bed).await);
        waiting.is_empty().then_some(())
    })
    .await;
    let enrollments = bed.api::<IndividualEnrollment>().list(&ListParams::default()).await.expect("list");
    let groups = bed.api::<EnrollmentGroup>().list(&ListParams::default()).await.expect("list");
    assert_eq!((enrollments.items.len(), groups.items.len()), (450, 50));
    let adopted = |o: Option<Value>| o.and_then(|s| s.get("ownership").cloned()) == Some(json!("Adopted"));
    assert!(enrollments.items.iter().all(|e| adopted(serde_json::to_value(&e.status).ok())));
    assert!(groups.items.iter().all(|g| adopted(serde_json::to_value(&g.status).ok())));

    let (writes_after, reads) = backend_writes_and_reads(&bed).await;
    assert!(reads >= 500, "the operator read each entry ({reads} reads counted)");
    assert_eq!(writes_after - writes_before, 0, "the operator wrote to DPS or a hub while adopting");
    let after = etags(&dps).await;
    let changed: Vec<&String> = before.keys().filter(|id| before.get(*id) != after.get(*id)).collect();
    assert!(changed.is_empty(), "entries written during adoption: {changed:?}");
    let _ = std::fs::remove_dir_all(&dir);
    bed.ns.delete().await;
}

/// Every file under `dir` and its text.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read_to_string(&path).expect("text file")));
        }
    }
    out
}

#[tokio::test]
async fn export_never_writes_a_key_into_a_manifest_without_write_secrets() {
    let engine = Engine::start();
    let dps = engine.dps();
    for i in 0..3 {
        let entry = wire::IndividualEnrollment {
            registration_id: format!("keyed-{i}"),
            attestation: keys(i),
            ..Default::default()
        };
        dps.create_enrollment(&entry).await.expect("entry");
    }
    let group = group_of(wire::IndividualEnrollment::default(), "keyed-group".into(), keys(99));
    dps.create_enrollment_group(&group).await.expect("group");
    let all_keys: Vec<String> = [0, 1, 2, 99].iter().flat_map(|&i| [key("primary", i), key("secondary", i)]).collect();

    let service = &engine.info.provisioning_service;
    let ca = engine.info.ca_certificate.clone().expect("the engine's CA file");
    let export = |dir: &Path, write_secrets: bool| {
        let mut args: Vec<String> = ["export", "--provisioning-service", "my-dps", "--connection-string-env"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(["DPS_CONNECTION_STRING".into(), "--endpoint".into(), service.endpoint.clone()]);
        args.extend(["--ca-file".into(), ca.display().to_string(), "--out-dir".into(), dir.display().to_string()]);
        if write_secrets {
            args.push("--write-secrets".into());
        }
        let env = vec![(
            "DPS_CONNECTION_STRING".to_string(),
            service.connection_string.to_secret_string().expose().to_string(),
        )];
        run(args, env)
    };

    let dir = out_dir("export-no-keys");
    let out = export(&dir, false).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "export failed:\n{stdout}\n{stderr}");
    let written = files(&dir);
    assert_eq!(written.len(), 4, "{written:?}");
    assert!(!dir.join("secrets").exists(), "no Secret files without --write-secrets");
    for k in &all_keys {
        for (path, content) in &written {
            assert!(!content.contains(k.as_str()), "a key is in {}", path.display());
        }
        assert!(!stdout.contains(k.as_str()) && !stderr.contains(k.as_str()), "a key was printed");
    }
    for secret in ["keyed-0.enrollment-keys", "keyed-2.enrollment-keys", "keyed-group.group-keys"] {
        assert!(stdout.contains(&format!("secret/{secret}")), "{secret} is listed as to be created:\n{stdout}");
    }

    // With the flag the keys are there, in the Secret files only: the check above can see a key.
    let with = out_dir("export-with-keys");
    let out = export(&with, true).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = files(&with);
    for k in &all_keys {
        let holders: Vec<&PathBuf> = all.iter().filter(|(_, c)| c.contains(k.as_str())).map(|(p, _)| p).collect();
        assert_eq!(holders.len(), 1, "{k} in {holders:?}");
        assert!(holders[0].starts_with(with.join("secrets")), "{}", holders[0].display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&with);
}
