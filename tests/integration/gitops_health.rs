//! The Argo CD health check we ship (`docs/gitops/argocd-health.lua`) judged on objects the real operator
//! left in the apiserver: Healthy, Progressing (not reconciled yet, spec edited, mid-order, deleting),
//! Degraded (bad input) and Suspended (an entry a DeviceDeprovision keeps disabled), for all four kinds.
//! The script runs under Lua 5.1 (Argo CD's dialect) and 5.4 with the object as the global `obj`, as Argo
//! CD runs it; the object reaches Lua as a table literal generated from its JSON.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::{Value, json};

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};
use dps_operator::controller::failpoint::ENV as FAILPOINT;

use crate::support::device::{register, with_key};
use crate::support::operator::{Bed, SERVICE};
use crate::support::{TestNamespace, client, ensure_crds};

/// Argo CD's interpreter is gopher-lua, a Lua 5.1; 5.4 guards against relying on one dialect's quirks.
const INTERPRETERS: [&str; 2] = ["lua5.1", "lua5.4"];
const KINDS: [&str; 4] = ["ProvisioningService", "IndividualEnrollment", "EnrollmentGroup", "DeviceDeprovision"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    root().join("docs/gitops/argocd-health.lua")
}

/// A Lua string literal holding `text` byte for byte (decimal escapes work in every Lua version).
fn lua_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(byte as char);
            }
            0x20..=0x7e => out.push(byte as char),
            other => out.push_str(&format!("\\{other:03}")),
        }
    }
    out.push('"');
    out
}

/// The Lua table Argo CD builds from an object's JSON: objects become keyed tables, arrays 1-based lists,
/// null is absent.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What Argo CD would show for `obj`: the shipped script's (status, message), the same under every
/// interpreter.
fn argo_health(obj: &Value) -> (String, String) {
    let driver = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
        lua_literal(obj),
        lua_string(&script().to_string_lossy()),
    );
    let mut results = Vec::new();
    for lua in INTERPRETERS {
        let out = Command::new(lua)
            .args(["-e", &driver])
            .output()
            .unwrap_or_else(|e| panic!("{lua} runs (deploy/local/prepare.sh installs it): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{lua} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        let (status, message) = stdout.split_once('\n').unwrap_or((stdout.as_str(), ""));
        results.push((status.to_string(), message.to_string()));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "the interpreters disagree: {results:?}");
    results.remove(0)
}

/// The object exactly as the apiserver serves it (every field, not only those our types know).
async fn live<K: Resource<DynamicType = ()>>(client: &Client, ns: &str, name: &str) -> Value {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()));
    let obj = api.get(name).await.unwrap_or_else(|e| panic!("{} {name}: {e}", K::kind(&())));
    serde_json::to_value(obj).expect("JSON")
}

/// Asserts that Argo CD would show `expected` for `obj`, with a message containing `says`.
fn assert_health(obj: &Value, expected: &str, says: &str) {
    let (status, message) = argo_health(obj);
    let what = format!("{} {}", obj["kind"].as_str().unwrap_or("?"), obj["metadata"]["name"].as_str().unwrap_or("?"));
    assert_eq!(status, expected, "{what}: {message}\nobject: {obj:#}");
    assert!(message.contains(says), "{what}: message {message:?} lacks {says:?}\nobject: {obj:#}");
}

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1",
        "kind": kind,
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("a valid {kind}: {e}"))
}

fn enrollment(name: &str, secret: &str, generate: bool) -> IndividualEnrollment {
    object(
        "IndividualEnrollment",
        name,
        json!({
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": secret, "generate": generate } },
        }),
    )
}

fn group(name: &str, secret: &str, generate: bool) -> EnrollmentGroup {
    object(
        "EnrollmentGroup",
        name,
        json!({
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "symmetricKey": { "secretName": secret, "generate": generate } },
        }),
    )
}

fn deprovision(name: &str, registration_id: &str, extra: Value) -> DeviceDeprovision {
    let mut spec = json!({ "provisioningServiceRef": { "name": SERVICE }, "registrationId": registration_id });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    object("DeviceDeprovision", name, spec)
}

fn service(name: &str, secret: &str) -> ProvisioningService {
    object(
        "ProvisioningService",
        name,
        json!({ "connectionStringSecretRef": { "name": secret, "key": "connectionString" } }),
    )
}

async fn create<K>(bed: &Bed, obj: &K)
where
    K: crate::support::Namespaced,
{
    bed.api::<K>().create(&PostParams::default(), obj).await.expect("created");
}

#[tokio::test]
async fn argo_cd_reads_every_kind_as_healthy_once_the_operator_reports_it_ready() {
    let bed = Bed::start("gitops-healthy").await;
    create(&bed, &enrollment("meter-1", "meter-1-keys", true)).await;
    create(&bed, &group("fleet-1", "fleet-1-keys", true)).await;
    // A device that never registered: revoked at DPS, nothing to do in a hub, Completed.
    create(&bed, &deprovision("retire-9", "meter-9", json!({}))).await;
    bed.wait_ready::<IndividualEnrollment>("meter-1").await;
    bed.wait_ready::<EnrollmentGroup>("fleet-1").await;
    bed.wait_ready::<DeviceDeprovision>("retire-9").await;

    let ns = &bed.ns.name;
    assert_health(&live::<ProvisioningService>(&bed.client, ns, SERVICE).await, "Healthy", "Connected");
    assert_health(&live::<IndividualEnrollment>(&bed.client, ns, "meter-1").await, "Healthy", "EntryInSync");
    assert_health(&live::<EnrollmentGroup>(&bed.client, ns, "fleet-1").await, "Healthy", "GroupInSync");
    let completed = live::<DeviceDeprovision>(&bed.client, ns, "retire-9").await;
    assert_eq!(completed["status"]["phase"], "Completed");
    assert_health(&completed, "Healthy", "Completed");
    bed.ns.delete().await;
}

#[tokio::test]
async fn argo_cd_reads_stalled_resources_of_every_kind_as_degraded_with_the_reason() {
    let bed = Bed::start("gitops-degraded").await;
    create(&bed, &service("other-dps", "no-such-credentials")).await;
    create(&bed, &enrollment("meter-2", "no-such-keys", false)).await;
    create(&bed, &group("fleet-2", "no-such-group-keys", false)).await;
    let leaf = json!({ "leafCertificate": { "secretRef": { "name": "no-such-cert", "key": "tls.crt" } } });
    create(&bed, &deprovision("retire-2", "sensor-2", leaf)).await;
    bed.wait_condition::<ProvisioningService>("other-dps", "Stalled", "True").await;
    bed.wait_condition::<IndividualEnrollment>("meter-2", "Stalled", "True").await;
    bed.wait_condition::<EnrollmentGroup>("fleet-2", "Stalled", "True").await;
    bed.wait_condition::<DeviceDeprovision>("retire-2", "Stalled", "True").await;

    let ns = &bed.ns.name;
    let (c, n) = (&bed.client, ns.as_str());
    assert_health(&live::<ProvisioningService>(c, n, "other-dps").await, "Degraded", "no-such-credentials");
    assert_health(&live::<IndividualEnrollment>(c, n, "meter-2").await, "Degraded", "SecretNotFound");
    assert_health(&live::<EnrollmentGroup>(c, n, "fleet-2").await, "Degraded", "SecretNotFound");
    let failed = live::<DeviceDeprovision>(c, n, "retire-2").await;
    assert_eq!(failed["status"]["phase"], "Failed");
    assert_health(&failed, "Degraded", "no-such-cert");
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_enrollment_kept_disabled_by_a_device_deprovision_reads_as_suspended_not_degraded() {
    let bed = Bed::start("gitops-suspended").await;
    create(&bed, &enrollment("meter-3", "meter-3-keys", true)).await;
    bed.wait_ready::<IndividualEnrollment>("meter-3").await;
    create(&bed, &deprovision("retire-3", "meter-3", json!({}))).await;
    bed.wait_ready::<DeviceDeprovision>("retire-3").await;
    bed.wait_condition::<IndividualEnrollment>("meter-3", "Blocked", "True").await;

    let blocked = live::<IndividualEnrollment>(&bed.client, &bed.ns.name, "meter-3").await;
    assert_health(&blocked, "Suspended", "retire-3");
    bed.ns.delete().await;
}

#[tokio::test]
async fn argo_cd_reads_unreconciled_edited_mid_order_and_deleting_resources_as_progressing() {
    // Objects no operator has seen yet: as the apiserver answered their creation, before any status.
    let client = client().await;
    ensure_crds(&client).await;
    let unwatched = TestNamespace::create(&client, "gitops-unwatched").await;
    let (post, n) = (PostParams::default(), unwatched.name.as_str());
    let value = |created: Result<Value, serde_json::Error>| created.expect("JSON");
    let fresh = [
        value(serde_json::to_value(
            Api::<ProvisioningService>::namespaced(client.clone(), n)
                .create(&post, &service(SERVICE, "credentials"))
                .await
                .expect("created"),
        )),
        value(serde_json::to_value(
            Api::<IndividualEnrollment>::namespaced(client.clone(), n)
                .create(&post, &enrollment("meter-4", "meter-4-keys", true))
                .await
                .expect("created"),
        )),
        value(serde_json::to_value(
            Api::<EnrollmentGroup>::namespaced(client.clone(), n)
                .create(&post, &group("fleet-4", "fleet-4-keys", true))
                .await
                .expect("created"),
        )),
        value(serde_json::to_value(
            Api::<DeviceDeprovision>::namespaced(client.clone(), n)
                .create(&post, &deprovision("retire-4", "meter-4", json!({})))
                .await
                .expect("created"),
        )),
    ];
    for (kind, obj) in KINDS.into_iter().zip(fresh) {
        assert_eq!(obj["kind"], kind);
        assert_health(&obj, "Progressing", "waiting for the operator");
    }
    unwatched.delete().await;

    let mut bed = Bed::start("gitops-progressing").await;
    create(&bed, &enrollment("meter-5", "meter-5-keys", true)).await;
    create(&bed, &group("fleet-5", "fleet-5-keys", true)).await;
    bed.wait_ready::<IndividualEnrollment>("meter-5").await;
    bed.wait_ready::<EnrollmentGroup>("fleet-5").await;
    let ns = bed.ns.name.clone();

    // A spec edited while the operator is down: Ready=True still stands for the previous generation.
    assert_eq!(bed.operator.terminate(Duration::from_secs(30)).await, Some(0));
    let edit = json!({ "spec": { "onDelete": { "device": "Delete" } } });
    bed.api::<IndividualEnrollment>()
        .patch("meter-5", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edited");
    let edited = live::<IndividualEnrollment>(&bed.client, &ns, "meter-5").await;
    assert_eq!(edited["metadata"]["generation"], 2);
    assert_health(&edited, "Progressing", "generation 2");

    // A group deletion stopped after its first step (the operator dies there, as a kill -9 would leave it).
    bed.operator.restart_with(&[(FAILPOINT, "egrp-after-group-disabled")]);
    bed.wait_ready::<IndividualEnrollment>("meter-5").await;
    bed.api::<EnrollmentGroup>().delete("fleet-5", &DeleteParams::default()).await.expect("deleted");
    assert_eq!(bed.operator.wait_for_exit(Duration::from_secs(60)).await, Some(86));
    let deleting = live::<EnrollmentGroup>(&bed.client, &ns, "fleet-5").await;
    assert!(deleting["metadata"]["deletionTimestamp"].is_string(), "{deleting:#}");
    assert_health(&deleting, "Progressing", "deleting");

    // A deprovision stopped between its DPS step and its hub step (a device with no entry of its own, so
    // no IndividualEnrollment races it for the entry).
    bed.operator.restart_with(&[(FAILPOINT, "deprov-after-entry-written")]);
    create(&bed, &deprovision("retire-5", "sensor-5", json!({}))).await;
    assert_eq!(bed.operator.wait_for_exit(Duration::from_secs(60)).await, Some(86));
    let midway = live::<DeviceDeprovision>(&bed.client, &ns, "retire-5").await;
    assert_eq!(midway["status"]["phase"], "Revoking", "{midway:#}");
    assert_health(&midway, "Progressing", "Deprovisioning");

    // The service cannot go while enrollments still use it.
    bed.operator.restart_with(&[]);
    bed.wait_ready::<DeviceDeprovision>("retire-5").await;
    bed.api::<ProvisioningService>().delete(SERVICE, &DeleteParams::default()).await.expect("deleted");
    bed.wait_condition::<ProvisioningService>(SERVICE, "Reconciling", "True").await;
    let waiting = live::<ProvisioningService>(&bed.client, &ns, SERVICE).await;
    assert_health(&waiting, "Progressing", "DependentsExist");
    bed.ns.delete().await;
}

#[tokio::test]
async fn a_deletion_stalled_on_a_hub_the_service_does_not_list_reads_as_degraded_not_progressing() {
    let bed = Bed::start("gitops-stuck").await;
    let second = bed.engine.info.hubs[1].host_name.clone();
    let mut far = enrollment("far-7", "far-7-keys", true);
    far.spec.settings.allocation_policy = Some(dps_operator::api::common::AllocationPolicy::Static);
    far.spec.settings.iot_hubs = vec![second.clone()];
    create(&bed, &far).await;
    bed.wait_ready::<IndividualEnrollment>("far-7").await;
    let keys = bed.api::<k8s_openapi::api::core::v1::Secret>().get("far-7-keys").await.expect("keys");
    let key = String::from_utf8(keys.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key");
    let registration = register(&bed.engine, "far-7", with_key(&key)).await;
    assert_eq!(registration.hub(), second);

    // The device's hub leaves the ProvisioningService, so the deletion cannot revoke it there.
    let services = bed.api::<ProvisioningService>();
    let hubs = services.get(SERVICE).await.expect("service").spec.hubs;
    let others: Vec<_> = hubs.iter().filter(|h| h.host_name != second).cloned().collect();
    let patch = Patch::Merge(json!({ "spec": { "hubs": serde_json::to_value(&others).expect("JSON") } }));
    services.patch(SERVICE, &PatchParams::default(), &patch).await.expect("hub removed");
    bed.wait_ready::<ProvisioningService>(SERVICE).await;
    bed.api::<IndividualEnrollment>().delete("far-7", &DeleteParams::default()).await.expect("deleted");
    bed.wait_condition::<IndividualEnrollment>("far-7", "Stalled", "True").await;

    let stuck = live::<IndividualEnrollment>(&bed.client, &bed.ns.name, "far-7").await;
    assert!(stuck["metadata"]["deletionTimestamp"].is_string(), "{stuck:#}");
    assert_health(&stuck, "Degraded", "deletion stalled, HubNotLinked");
    bed.ns.delete().await;
}

#[test]
fn the_argo_cd_snippet_and_the_chart_copy_carry_the_tested_script() {
    let source = std::fs::read_to_string(script()).expect("docs/gitops/argocd-health.lua");
    let chart_copy = root().join("charts/dps-operator/argocd/health.lua");
    assert_eq!(std::fs::read_to_string(&chart_copy).expect("chart copy"), source, "{} differs", chart_copy.display());
    for snippet in ["docs/gitops/argocd-cm.yaml", "charts/dps-operator/argocd/argocd-cm.yaml"] {
        let text = std::fs::read_to_string(root().join(snippet)).expect("snippet");
        let config_map: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{snippet}: {e}"));
        assert_eq!(config_map["metadata"]["name"], "argocd-cm", "{snippet}");
        for kind in KINDS {
            let key = format!("resource.customizations.health.dps.iot-operator.dev_{kind}");
            assert_eq!(config_map["data"][&key].as_str(), Some(source.as_str()), "{snippet}: {key}");
        }
    }
}
