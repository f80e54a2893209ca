//! The CRDs install, every example is accepted, and invalid manifests are refused naming the field.

use std::time::Duration;

use kube::Client;
use kube::api::DynamicObject;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{TestNamespace, client, ensure_crds, eventually, kubectl, manifests};

fn yaml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("directory is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// Every document of every YAML file under examples/, in file-name order.
fn examples() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), &mut files);
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("example is readable");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).expect("example is valid YAML");
            if !value.is_null() {
                docs.push((file.display().to_string(), value));
            }
        }
    }
    docs
}

async fn create_dynamic(client: &Client, ns: &str, value: &Value) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(value.clone()).expect("manifest is an object");
    manifests::create(client, ns, &object).await
}

#[tokio::test]
async fn all_four_crds_install_and_become_established() {
    let client = client().await;
    // ensure_crds waits for Established and fails the test if any CRD does not get there.
    ensure_crds(&client).await;
    let output = kubectl().args(["get", "crd", "-o", "name"]).output().expect("kubectl runs");
    let names = String::from_utf8_lossy(&output.stdout);
    for plural in ["provisioningservices", "individualenrollments", "enrollmentgroups", "devicedeprovisions"] {
        assert!(names.contains(&format!("{plural}.dps.iot-operator.dev")), "{plural} missing from {names}");
    }
}

#[tokio::test]
async fn every_example_is_accepted_and_listed_under_the_iot_category() {
    let client = client().await;
    ensure_crds(&client).await;
    // One namespace per directory: examples/revoke/ re-declares objects of examples/ (a disabled version).
    let mut namespaces: Vec<(std::path::PathBuf, TestNamespace, Vec<String>)> = Vec::new();
    let mut kinds = Vec::new();
    for (file, manifest) in examples() {
        let dir = std::path::Path::new(&file).parent().expect("a file has a directory").to_path_buf();
        if !namespaces.iter().any(|(d, _, _)| *d == dir) {
            namespaces.push((dir.clone(), TestNamespace::create(&client, "examples").await, Vec::new()));
        }
        let (_, ns, expected) = namespaces.iter_mut().find(|(d, _, _)| *d == dir).expect("just added");
        let created = create_dynamic(&client, &ns.name, &manifest)
            .await
            .unwrap_or_else(|err| panic!("{file}: the apiserver refused {}: {err}", manifest["metadata"]["name"]));
        let kind = manifest["kind"].as_str().unwrap_or_default().to_lowercase();
        if manifest["apiVersion"].as_str().is_some_and(|v| v.starts_with("dps.iot-operator.dev/")) {
            expected.push(format!("{kind}.dps.iot-operator.dev/{}", created.metadata.name.unwrap_or_default()));
            kinds.push(kind);
        }
    }
    for kind in ["provisioningservice", "individualenrollment", "enrollmentgroup", "devicedeprovision"] {
        assert!(kinds.iter().any(|k| k == kind), "examples/ has no {kind}");
    }
    for (_, ns, expected) in namespaces {
        let output = kubectl().args(["get", "iot", "-n", &ns.name, "-o", "name"]).output().expect("kubectl runs");
        assert!(output.status.success(), "kubectl get iot failed: {}", String::from_utf8_lossy(&output.stderr));
        let listed = String::from_utf8_lossy(&output.stdout);
        for object in &expected {
            assert!(listed.lines().any(|l| l == object), "`kubectl get iot` does not list {object}:\n{listed}");
        }
        ns.delete().await;
    }
}

fn enrollment(spec: Value) -> Value {
    json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": "IndividualEnrollment",
        "metadata": { "name": "invalid" },
        "spec": spec,
    })
}

fn valid_enrollment_spec() -> Value {
    json!({
        "provisioningServiceRef": { "name": "dps" },
        "attestation": { "symmetricKey": { "secretName": "keys" } },
    })
}

fn with(mut spec: Value, path: &[&str], value: Value) -> Value {
    let mut cursor = &mut spec;
    for key in &path[..path.len() - 1] {
        cursor = &mut cursor[*key];
    }
    cursor[path[path.len() - 1]] = value;
    spec
}

async fn assert_refused_naming(client: &Client, ns: &str, manifest: Value, field: &str) {
    match create_dynamic(client, ns, &manifest).await {
        Ok(_) => panic!("the apiserver accepted an invalid manifest (expected a complaint about {field}): {manifest}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "unexpected refusal: {status:?}");
            assert!(status.message.contains(field), "refusal does not name {field}: {}", status.message);
        }
        Err(err) => panic!("unexpected error: {err}"),
    }
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_a_message_naming_the_field() {
    let client = client().await;
    ensure_crds(&client).await;
    let ns = TestNamespace::create(&client, "invalid").await;
    // The valid base is accepted, so each refusal below is due to its one change.
    create_dynamic(&client, &ns.name, &enrollment(valid_enrollment_spec())).await.expect("valid base is accepted");

    let cases: Vec<(Value, &str)> = vec![
        (
            enrollment(with(valid_enrollment_spec(), &["registrationId"], json!("ends-with-a-dot."))),
            "spec.registrationId",
        ),
        (enrollment(with(valid_enrollment_spec(), &["registrationId"], json!("x".repeat(129)))), "spec.registrationId"),
        (
            enrollment(with(valid_enrollment_spec(), &["provisioningStatus"], json!("Paused"))),
            "spec.provisioningStatus",
        ),
        (enrollment(with(valid_enrollment_spec(), &["onDelete"], json!({"device": "Shred"}))), "spec.onDelete.device"),
        (
            enrollment(with(valid_enrollment_spec(), &["attestation"], json!({"tpm": {"endorsementKey": "c2hvcnQ="}}))),
            "spec.attestation.tpm.endorsementKey",
        ),
        (
            enrollment(with(
                valid_enrollment_spec(),
                &["attestation", "tpm"],
                json!({"endorsementKey": "A".repeat(120)}),
            )),
            "spec.attestation",
        ),
        (
            enrollment(json!({ "attestation": { "symmetricKey": { "secretName": "keys" } } })),
            "spec.provisioningServiceRef",
        ),
        // Exactly one attestation on an apiserver without CEL: none, or only an unknown one (two: below).
        (enrollment(with(valid_enrollment_spec(), &["attestation"], json!({}))), "spec.attestation"),
        (
            enrollment(with(valid_enrollment_spec(), &["attestation"], json!({"password": {"secretName": "p"}}))),
            "spec.attestation",
        ),
        (enrollment(with(valid_enrollment_spec(), &["iotHubs"], json!(["not a host name"]))), "spec.iotHubs"),
        (
            json!({
                "apiVersion": "dps.iot-operator.dev/v1alpha1",
                "kind": "DeviceDeprovision",
                "metadata": { "name": "invalid" },
                "spec": { "provisioningServiceRef": { "name": "dps" }, "registrationId": "dev-1", "device": "Shred" },
            }),
            "spec.device",
        ),
        (
            json!({
                "apiVersion": "dps.iot-operator.dev/v1alpha1",
                "kind": "EnrollmentGroup",
                "metadata": { "name": "invalid" },
                "spec": {
                    "provisioningServiceRef": { "name": "dps" },
                    "attestation": { "x509": { "signingCertificates": { "primary": { "pem": "x" } }, "caReferences": { "primary": "ca" } } },
                },
            }),
            "spec.attestation.x509",
        ),
    ];
    for (manifest, field) in cases {
        let mut manifest = manifest;
        manifest["metadata"]["name"] = json!("invalid-case");
        assert_refused_naming(&client, &ns.name, manifest, field).await;
    }
    ns.delete().await;
}

#[tokio::test]
async fn registration_ids_ending_in_a_dash_or_starting_with_a_special_character_are_accepted() {
    let client = client().await;
    ensure_crds(&client).await;
    let ns = TestNamespace::create(&client, "ids").await;
    for (i, id) in ["sensor-", ".sensor", "_sensor", ":sensor", "-sensor", "-"].into_iter().enumerate() {
        let mut manifest = enrollment(with(valid_enrollment_spec(), &["registrationId"], json!(id)));
        manifest["metadata"]["name"] = json!(format!("id-{i}"));
        if let Err(err) = create_dynamic(&client, &ns.name, &manifest).await {
            panic!("the CRD refuses registration ID '{id}', which DPS accepts: {err}");
        }
        let group = json!({
            "apiVersion": "dps.iot-operator.dev/v1alpha1",
            "kind": "EnrollmentGroup",
            "metadata": { "name": format!("group-{i}") },
            "spec": {
                "provisioningServiceRef": { "name": "dps" },
                "enrollmentGroupId": id,
                "attestation": { "symmetricKey": { "secretName": "keys" } },
            },
        });
        if let Err(err) = create_dynamic(&client, &ns.name, &group).await {
            panic!("the CRD refuses enrollment group ID '{id}', which DPS accepts: {err}");
        }
    }
    ns.delete().await;
}

#[tokio::test]
async fn kubectl_explain_describes_the_spec_fields_of_every_kind() {
    let client = client().await;
    ensure_crds(&client).await;
    for (kind, field) in [
        ("provisioningservice", "connectionStringSecretRef"),
        ("individualenrollment", "attestation"),
        ("enrollmentgroup", "onDelete"),
        ("devicedeprovision", "leafCertificate"),
    ] {
        // The apiserver publishes CRD schemas to its OpenAPI document a moment after they are Established.
        let text = eventually(&format!("kubectl explain {kind}.spec"), Duration::from_secs(60), || async {
            let out = kubectl().args(["explain", &format!("{kind}.spec")]).output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (out.status.success() && text.contains(field)).then_some(text)
        })
        .await;
        let description = text.split("DESCRIPTION:").nth(1).and_then(|rest| rest.split("FIELDS:").next()).unwrap_or("");
        assert!(!description.trim().is_empty(), "{kind}.spec has no description:\n{text}");
        let after_field = text.split(&format!("   {field}\t")).nth(1).unwrap_or("");
        let field_doc = after_field.lines().nth(1).unwrap_or("").trim();
        assert!(!field_doc.is_empty(), "{kind}.spec.{field} has no description:\n{text}");
    }
}
