//! The CRDs on a current API machinery: Kubernetes 1.36's apiextensions-apiserver (built from Debian sid's
//! packages by deploy/local/prepare-apiextensions.sh). The 1.20 control plane of the integration tests
//! drops CEL rules, and tests/cel_rules.rs evaluates them client-side only; here a real apiserver installs
//! the CRDs and judges objects with the schema (oneOf choices, ID pattern and length) and every CEL rule.

mod server;

use dps_operator::api::{self, DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::api::{Patch, PatchParams};
use kube::{CustomResourceExt, Resource, ResourceExt};
use serde_json::{Value, json};
use server::ModernApiserver;

/// Custom resources need a namespace name, not a namespace object (this server has no namespaces API).
const NAMESPACE: &str = "crd-test";

/// Installs all four CRDs, asserting each install draws no warning, and waits until they are served.
async fn with_crds() -> ModernApiserver {
    let bed = ModernApiserver::start().await;
    for (file, crd) in api::crds() {
        let warnings = bed.apply_crd(&serde_json::to_value(&crd).expect("CRD serialises")).await;
        assert!(warnings.is_empty(), "installing {file} drew warnings: {warnings:?}");
        bed.wait_established(&crd.name_any()).await;
    }
    bed
}

fn api_of<K: Resource<DynamicType = ()>>(bed: &ModernApiserver) -> Api<DynamicObject> {
    Api::namespaced_with(bed.client.clone(), NAMESPACE, &ApiResource::erase::<K>(&()))
}

fn object<K: Resource<DynamicType = ()>>(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "spec": spec,
    })
}

fn error_message(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message,
        other => panic!("expected the apiserver to judge the object, got {other}"),
    }
}

async fn create(api: &Api<DynamicObject>, object: &Value) -> Result<DynamicObject, String> {
    let object: DynamicObject = serde_json::from_value(object.clone()).expect("a valid object envelope");
    api.create(&PostParams::default(), &object).await.map_err(error_message)
}

async fn accepted(api: &Api<DynamicObject>, object: &Value) {
    if let Err(message) = create(api, object).await {
        panic!("refused {object}: {message}");
    }
}

async fn refused(api: &Api<DynamicObject>, object: &Value, expected: &str) {
    match create(api, object).await {
        Ok(_) => panic!("accepted {object}, expected a refusal with {expected:?}"),
        Err(message) => assert!(message.contains(expected), "refusal of {object} lacks {expected:?}: {message}"),
    }
}

/// Reads the object, lets `change` edit it as JSON, and writes it back.
async fn update(api: &Api<DynamicObject>, name: &str, change: impl FnOnce(&mut Value)) -> Result<(), String> {
    let current = api.get(name).await.map_err(error_message)?;
    let mut value = serde_json::to_value(&current).expect("object serialises");
    change(&mut value);
    let changed: DynamicObject = serde_json::from_value(value).expect("still an object");
    api.replace(name, &PostParams::default(), &changed).await.map(|_| ()).map_err(error_message)
}

fn symmetric_key() -> Value {
    json!({ "symmetricKey": { "secretName": "keys" } })
}

fn x509() -> Value {
    json!({ "x509": { "clientCertificates": { "primary": { "pem": "cert" } } } })
}

fn tpm() -> Value {
    json!({ "tpm": { "endorsementKey": "A".repeat(64) } })
}

fn enrollment(name: &str, registration_id: Option<&str>, attestation: Value) -> Value {
    let mut spec = json!({ "provisioningServiceRef": { "name": "dps" }, "attestation": attestation });
    if let Some(id) = registration_id {
        spec["registrationId"] = json!(id);
    }
    object::<IndividualEnrollment>(name, spec)
}

#[tokio::test]
async fn the_crds_install_on_kubernetes_1_36_without_warnings_and_become_established() {
    let bed = with_crds().await;
    // Debian sid moves on; 1.36 is what it had when this was written, and newer is fine.
    let version = bed.version().await;
    let minor = version.strip_prefix("v1.").and_then(|v| v.split('.').next()).and_then(|m| m.parse::<u32>().ok());
    assert!(minor.is_some_and(|m| m >= 36), "expected a 1.36 or newer apiserver, got {version}");
}

#[tokio::test]
async fn individual_enrollments_are_judged_by_the_schema_and_cel_rules_on_kubernetes_1_36() {
    let bed = with_crds().await;
    let api = api_of::<IndividualEnrollment>(&bed);

    accepted(&api, &enrollment("keys", Some("device-1"), symmetric_key())).await;
    accepted(&api, &enrollment("cert", Some(&"c".repeat(64)), x509())).await;
    accepted(&api, &enrollment("tpm", Some("-tpm.device_1:a"), tpm())).await;
    accepted(&api, &enrollment("named-by-metadata", None, symmetric_key())).await;
    accepted(&api, &enrollment("longest", Some(&"k".repeat(128)), symmetric_key())).await;

    // The choices: none, or an unknown one (pruned), draws the CEL rule's message beside the schema's.
    // Two are refused by the schema alone ("Too many"): such an error stops the apiserver's CEL rules.
    let exactly_one = "exactly one of symmetricKey, x509, tpm";
    refused(&api, &enrollment("no-attestation", None, json!({})), exactly_one).await;
    refused(&api, &enrollment("unknown", None, json!({ "password": { "secretName": "p" } })), exactly_one).await;
    let mut two = symmetric_key();
    two["tpm"] = tpm()["tpm"].clone();
    refused(&api, &enrollment("two", None, two), "spec.attestation: Too many").await;
    let mut missing = enrollment("missing-attestation", None, json!({}));
    missing["spec"].as_object_mut().expect("spec").remove("attestation");
    refused(&api, &missing, "spec.attestation: Required value").await;
    let no_source = json!({ "x509": { "clientCertificates": { "primary": {} } } });
    refused(&api, &enrollment("no-source", None, no_source), "exactly one of pem, secretRef, configMapRef").await;

    // The ID rule: DPS's pattern and 128 characters (schema), 64 with X.509 (CEL, on changes).
    refused(&api, &enrollment("bad-char", Some("device 1"), symmetric_key()), "spec.registrationId").await;
    refused(&api, &enrollment("bad-end", Some("device."), symmetric_key()), "spec.registrationId").await;
    refused(&api, &enrollment("too-long", Some(&"k".repeat(129)), symmetric_key()), "spec.registrationId").await;

    // Transition rules: the ID is immutable and cannot be added or removed.
    let changed = update(&api, "keys", |o| o["spec"]["registrationId"] = json!("device-2")).await;
    assert!(changed.as_ref().is_err_and(|m| m.contains("registrationId is immutable")), "{changed:?}");
    let removed = update(&api, "keys", |o| {
        o["spec"].as_object_mut().expect("spec").remove("registrationId");
    })
    .await;
    assert!(removed.as_ref().is_err_and(|m| m.contains("cannot be added or removed")), "{removed:?}");
    let added = update(&api, "named-by-metadata", |o| o["spec"]["registrationId"] = json!("named-by-metadata")).await;
    assert!(added.as_ref().is_err_and(|m| m.contains("cannot be added or removed")), "{added:?}");

    // The X.509 length rule judges changes: a longer X.509 ID, or a switch to X.509 with a long ID.
    accepted(&api, &enrollment("short-cert", Some("short"), x509())).await;
    let longer = update(&api, "short-cert", |o| o["spec"]["registrationId"] = json!("c".repeat(70))).await;
    assert!(longer.as_ref().is_err_and(|m| m.contains("at most 64")), "{longer:?}");
    accepted(&api, &enrollment("long-keys", Some(&"l".repeat(70)), symmetric_key())).await;
    let switched = update(&api, "long-keys", |o| o["spec"]["attestation"] = x509()).await;
    assert!(switched.as_ref().is_err_and(|m| m.contains("at most 64")), "{switched:?}");
    let switched_disabled = update(&api, "long-keys", |o| {
        o["spec"]["attestation"] = x509();
        o["spec"]["provisioningStatus"] = json!("Disabled");
    })
    .await;
    assert!(switched_disabled.is_ok(), "a Disabled entry is not held to the CN limit: {switched_disabled:?}");
    let edited = update(&api, "cert", |o| o["spec"]["provisioningStatus"] = json!("Disabled")).await;
    assert!(edited.is_ok(), "{edited:?}");
}

#[tokio::test]
async fn groups_services_and_deprovisions_are_judged_by_the_schema_and_cel_rules_on_kubernetes_1_36() {
    let bed = with_crds().await;

    let groups = api_of::<EnrollmentGroup>(&bed);
    let group = |name: &str, id: Option<&str>, attestation: Value| {
        let mut spec = json!({ "provisioningServiceRef": { "name": "dps" }, "attestation": attestation });
        if let Some(id) = id {
            spec["enrollmentGroupId"] = json!(id);
        }
        object::<EnrollmentGroup>(name, spec)
    };
    accepted(&groups, &group("keys", Some("group-1"), symmetric_key())).await;
    let signing = json!({ "x509": { "signingCertificates": { "primary": { "secretRef": { "name": "ca", "key": "tls.crt" } } } } });
    accepted(&groups, &group("signing", None, signing)).await;
    accepted(&groups, &group("references", None, json!({ "x509": { "caReferences": { "primary": "root" } } }))).await;
    refused(&groups, &group("none", None, json!({})), "exactly one of symmetricKey, x509").await;
    refused(&groups, &group("tpm", None, tpm()), "exactly one of symmetricKey, x509").await;
    let x509_none = json!({ "x509": {} });
    refused(&groups, &group("x509-none", None, x509_none), "exactly one of signingCertificates, caReferences").await;
    let x509_both = json!({ "x509": { "caReferences": { "primary": "root" }, "signingCertificates": { "primary": { "pem": "c" } } } });
    refused(&groups, &group("x509-both", None, x509_both), "spec.attestation.x509: Too many").await;
    refused(&groups, &group("bad-id", Some("group:"), symmetric_key()), "spec.enrollmentGroupId").await;
    refused(&groups, &group("long-id", Some(&"g".repeat(129)), symmetric_key()), "spec.enrollmentGroupId").await;
    let changed = update(&groups, "keys", |o| o["spec"]["enrollmentGroupId"] = json!("group-2")).await;
    assert!(changed.as_ref().is_err_and(|m| m.contains("enrollmentGroupId is immutable")), "{changed:?}");
    let removed = update(&groups, "keys", |o| {
        o["spec"].as_object_mut().expect("spec").remove("enrollmentGroupId");
    })
    .await;
    assert!(removed.as_ref().is_err_and(|m| m.contains("cannot be added or removed")), "{removed:?}");
    let disabled = update(&groups, "keys", |o| o["spec"]["provisioningStatus"] = json!("Disabled")).await;
    assert!(disabled.is_ok(), "{disabled:?}");

    let services = api_of::<ProvisioningService>(&bed);
    let service = |name: &str, extra: Value| {
        let mut spec = json!({ "connectionStringSecretRef": { "name": "dps", "key": "connectionString" } });
        spec.as_object_mut().expect("spec").extend(extra.as_object().expect("extra fields").clone());
        object::<ProvisioningService>(name, spec)
    };
    let limits =
        |n: i64| json!({ "rateLimits": { "serviceOperationsPerMinute": n, "registryOperationsPerMinute": n } });
    accepted(&services, &service("defaults", json!({}))).await;
    accepted(&services, &service("limits", limits(1_000_000))).await;
    refused(&services, &service("zero", limits(0)), "rateLimits").await;
    refused(&services, &service("too-many", limits(1_000_001)), "rateLimits").await;
    refused(&services, &service("no-ca", json!({ "caBundle": {} })), "exactly one of pem, secretRef, configMapRef")
        .await;

    let deprovisions = api_of::<DeviceDeprovision>(&bed);
    let deprovision = |name: &str, id: &str| {
        object::<DeviceDeprovision>(name, json!({ "provisioningServiceRef": { "name": "dps" }, "registrationId": id }))
    };
    accepted(&deprovisions, &deprovision("stolen", "device-1")).await;
    refused(&deprovisions, &deprovision("bad-id", "device_"), "spec.registrationId").await;
    refused(&deprovisions, &deprovision("long-id", &"d".repeat(129)), "spec.registrationId").await;
    let changed = update(&deprovisions, "stolen", |o| o["spec"]["registrationId"] = json!("device-2")).await;
    assert!(changed.as_ref().is_err_and(|m| m.contains("registrationId is immutable")), "{changed:?}");
    let reason = update(&deprovisions, "stolen", |o| o["spec"]["reason"] = json!("stolen from the depot")).await;
    assert!(reason.is_ok(), "{reason:?}");
}

/// Drops every `x-kubernetes-validations` from a schema, as Kubernetes before 1.25 does.
fn without_cel(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(without_cel);
        }
        Value::Array(items) => items.iter_mut().for_each(without_cel),
        _ => {}
    }
}

#[tokio::test]
async fn an_x509_enrollment_created_before_the_length_rule_can_be_disabled_on_kubernetes_1_36() {
    let bed = ModernApiserver::start().await;
    let crd = serde_json::to_value(IndividualEnrollment::crd()).expect("CRD serialises");
    let mut old_crd = crd.clone();
    without_cel(&mut old_crd);
    let name = crd["metadata"]["name"].as_str().expect("CRD name").to_string();
    bed.apply_crd(&old_crd).await;
    bed.wait_established(&name).await;
    let api = api_of::<IndividualEnrollment>(&bed);
    // Written while no CEL rule was in force, as on Kubernetes 1.20.
    let long_id = "x".repeat(70);
    accepted(&api, &enrollment("legacy", Some(&long_id), x509())).await;

    let warnings = bed.apply_crd(&crd).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    // The new schema takes effect asynchronously: wait until a CEL rule refuses a (dry-run) ID change.
    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut probe = api.get("legacy").await.expect("legacy object");
        probe.data["spec"]["registrationId"] = json!("probe");
        match api.replace("legacy", &ModernApiserver::dry_run(), &probe).await {
            Err(kube::Error::Api(status)) if status.message.contains("registrationId is immutable") => break,
            _ => assert!(tokio::time::Instant::now() < give_up, "the CEL rules never came into force"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let disabled = update(&api, "legacy", |o| o["spec"]["provisioningStatus"] = json!("Disabled")).await;
    assert!(disabled.is_ok(), "disabling an entry created before the rule must pass: {disabled:?}");
    let edited = update(&api, "legacy", |o| {
        o["spec"]["provisioningStatus"] = json!("Enabled");
        o["spec"]["iotHubs"] = json!(["hub.azure-devices.net"]);
    })
    .await;
    assert!(edited.is_ok(), "an edit that keeps the ID passes: {edited:?}");
    let status = json!({ "status": { "observedGeneration": 3 } });
    let written = api.patch_status("legacy", &PatchParams::default(), &Patch::Merge(&status)).await;
    assert!(written.is_ok(), "the controller can still write its status: {:?}", written.err());
    let changed = update(&api, "legacy", |o| o["spec"]["registrationId"] = json!("y".repeat(70))).await;
    assert!(changed.as_ref().is_err_and(|m| m.contains("at most 64")), "{changed:?}");
}
