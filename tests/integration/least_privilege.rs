//! The chart's RBAC is least privilege: an operator holding exactly the chart's ClusterRole and leader Role
//! (by impersonating a ServiceAccount) serves the example scenarios, and with any one verb or resource
//! taken out of any rule it does not: the apiserver refuses it something, or the scenario does not finish.

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::Deserialize;
use serde_json::Value;

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};
use dps_operator::controller::health;

use crate::support::engine::Engine;
use crate::support::operator::{Operator, SERVICE};
use crate::support::{TestNamespace, client, ensure_crds, kubectl};

/// The ServiceAccount the operator impersonates in each variant's namespace.
const ACCOUNT: &str = "operator";
/// Variants run at once (each an engine and an operator on a 2-core machine).
const PARALLEL: usize = 4;
/// How long one scenario may take before it counts as failed.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(90);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The rules of the chart's ClusterRole and of its leader-election Role, as rendered by default.
pub fn chart_roles() -> (Vec<PolicyRule>, Vec<PolicyRule>) {
    let output = Command::new("helm")
        .args(["template", "dps-operator", "--namespace", "dps-operator", "--set", "crds.enabled=false"])
        .arg(root().join("charts/dps-operator"))
        .output()
        .expect("helm runs");
    assert!(output.status.success(), "helm template failed: {}", String::from_utf8_lossy(&output.stderr));
    let yaml = String::from_utf8_lossy(&output.stdout).to_string();
    let docs: Vec<Value> =
        serde_yaml_ng::Deserializer::from_str(&yaml).filter_map(|doc| Value::deserialize(doc).ok()).collect();
    let rules = |kind: &str| -> Vec<PolicyRule> {
        let doc = docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("the chart renders a {kind}"));
        serde_json::from_value(doc["rules"].clone()).expect("valid rules")
    };
    (rules("ClusterRole"), rules("Role"))
}

/// One role set to try, and what was taken out of the chart's.
struct Variant {
    label: String,
    cluster: Vec<PolicyRule>,
    lease: Vec<PolicyRule>,
}

/// Every rule set with one verb, or one resource, taken out of one rule (a rule left empty goes).
fn reduced(rules: &[PolicyRule]) -> Vec<(String, Vec<PolicyRule>)> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let resources = rule.resources.clone().unwrap_or_default();
        let what = format!("rule {i} ({})", resources.join(","));
        for verb in &rule.verbs {
            let mut less = rules.to_vec();
            less[i].verbs.retain(|v| v != verb);
            if less[i].verbs.is_empty() {
                less.remove(i);
            }
            out.push((format!("{what} without verb {verb}"), less));
        }
        if resources.len() > 1 {
            for resource in &resources {
                let mut less = rules.to_vec();
                less[i].resources = Some(resources.iter().filter(|r| *r != resource).cloned().collect());
                out.push((format!("{what} without resource {resource}"), less));
            }
        }
    }
    out
}

fn user(ns: &str) -> String {
    format!("system:serviceaccount:{ns}:{ACCOUNT}")
}

fn subject(ns: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: ACCOUNT.into(),
        namespace: Some(ns.into()),
        ..Subject::default()
    }]
}

/// Grants the variant's rules to the namespace's ServiceAccount (cluster rules cluster-wide, as the chart).
async fn grant(client: &Client, ns: &str, variant: &Variant) {
    let name = format!("least-privilege-{ns}");
    let meta = || ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() };
    let pp = PostParams::default();
    let role = ClusterRole { metadata: meta(), rules: Some(variant.cluster.clone()), ..ClusterRole::default() };
    Api::<ClusterRole>::all(client.clone()).create(&pp, &role).await.expect("ClusterRole");
    let binding = ClusterRoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: name.clone(),
        },
        subjects: Some(subject(ns)),
    };
    Api::<ClusterRoleBinding>::all(client.clone()).create(&pp, &binding).await.expect("ClusterRoleBinding");
    let role = Role { metadata: meta(), rules: Some(variant.lease.clone()) };
    Api::<Role>::namespaced(client.clone(), ns).create(&pp, &role).await.expect("Role");
    let binding = RoleBinding {
        metadata: meta(),
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: name.clone() },
        subjects: Some(subject(ns)),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ns).create(&pp, &binding).await.expect("RoleBinding");
}

async fn revoke(client: &Client, ns: &str) {
    let name = format!("least-privilege-{ns}");
    let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(&name, &Default::default()).await;
    let _ = Api::<ClusterRole>::all(client.clone()).delete(&name, &Default::default()).await;
}

/// A scenario run by one operator; every wait gives up early when the operator was refused something.
struct Run<'a> {
    client: Client,
    ns: &'a str,
    operator: &'a mut Operator,
    give_up: Instant,
}

impl Run<'_> {
    /// Fails when the apiserver refused the operator anything, or it exited, or time is up.
    fn check(&mut self) -> Result<(), String> {
        let log = self.operator.log();
        if let Some(line) = log.lines().find(|l| l.contains("forbidden") || l.contains("Forbidden")) {
            return Err(format!("refused: {}", line.chars().take(300).collect::<String>()));
        }
        if let Some(code) = self.operator.exit_code() {
            return Err(format!("the operator exited ({code:?})"));
        }
        if Instant::now() > self.give_up {
            return Err("the scenario did not finish in time".into());
        }
        Ok(())
    }

    async fn until<T, F, Fut>(&mut self, what: &str, mut probe: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        loop {
            if let Some(value) = probe().await {
                return Ok(value);
            }
            self.check().map_err(|e| format!("{what}: {e}"))?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ready<K>(&mut self, name: &str) -> Result<(), String>
    where
        K: crate::support::Namespaced,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        self.until(&format!("{} {name} Ready", K::kind(&())), || {
            let api = api.clone();
            async move {
                let value = serde_json::to_value(api.get_opt(name).await.ok()??).ok()?;
                let generation = value.pointer("/metadata/generation").and_then(Value::as_i64);
                let observed = value.pointer("/status/observedGeneration").and_then(Value::as_i64);
                let conditions = value.pointer("/status/conditions")?.as_array()?.clone();
                let ready = conditions.iter().any(|c| c["type"] == health::READY && c["status"] == "True");
                (ready && observed == generation).then_some(())
            }
        })
        .await
    }

    async fn gone<K>(&mut self, name: &str) -> Result<(), String>
    where
        K: crate::support::Namespaced,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        self.until(&format!("{} {name} deleted", K::kind(&())), || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
        })
        .await
    }

    fn patch_status(&self, name: &str, status: &str) -> Result<(), String> {
        let patch = format!(r#"{{"spec":{{"provisioningStatus":"{status}"}}}}"#);
        let output = kubectl()
            .args(["patch", "-n", self.ns, "individualenrollment", name, "--type", "merge", "-p", &patch])
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("kubectl patch {name}: {}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    fn kubectl(&self, args: &[&str], file: &str) -> Result<(), String> {
        let output = kubectl()
            .args(args)
            .args(["-n", self.ns, "-f"])
            .arg(root().join("examples").join(file))
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("kubectl {args:?} {file}: {}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// The examples of rbac.rs: an individual enrollment with generated keys and one with an X.509
    /// certificate from a ConfigMap, two groups, a key rotation, a deprovision of a group device, and two deletions whose
    /// finalizers must be released, with the events recorded on the way.
    async fn scenario(&mut self) -> Result<(), String> {
        self.ready::<ProvisioningService>(SERVICE).await?;
        for file in [
            "05-certificates.yaml",
            "10-individual-enrollment-symmetric-key.yaml",
            "11-individual-enrollment-x509.yaml",
            "20-enrollment-group-x509.yaml",
            "21-enrollment-group-symmetric-key.yaml",
        ] {
            self.kubectl(&["apply"], file)?;
        }
        self.ready::<IndividualEnrollment>("thermostat-17").await?;
        self.ready::<IndividualEnrollment>("sensor-0042").await?;
        self.ready::<EnrollmentGroup>("fleet-intermediate").await?;
        self.ready::<EnrollmentGroup>("vending-machines").await?;
        // The same change twice makes the same event twice: the second one is a series, patched.
        for status in ["Disabled", "Enabled", "Disabled"] {
            self.patch_status("thermostat-17", status)?;
            self.ready::<IndividualEnrollment>("thermostat-17").await?;
        }
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), self.ns);
        self.until("a recurring EntryDisabled event counted as a series", || {
            let events = events.clone();
            async move {
                let list = events.list(&Default::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("EntryDisabled") && e.series.is_some())
                    .then_some(())
            }
        })
        .await?;
        // A key rotation writes the new key into the key Secret: the chart's rights must allow it.
        let patch = r#"{"metadata":{"annotations":{"dps.iot-operator.dev/rotate-key":"secondary"}}}"#;
        let output = kubectl()
            .args(["patch", "-n", self.ns, "individualenrollment", "thermostat-17", "--type", "merge", "-p", patch])
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!("kubectl annotate: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let enrollments: Api<IndividualEnrollment> = Api::namespaced(self.client.clone(), self.ns);
        self.until("the rotated secondary key pushed to DPS", || {
            let enrollments = enrollments.clone();
            async move {
                let e = enrollments.get_opt("thermostat-17").await.ok().flatten()?;
                (e.status?.credentials?.generation >= 2).then_some(())
            }
        })
        .await?;
        self.kubectl(&["apply"], "revoke/deprovision-group-device.yaml")?;
        self.ready::<DeviceDeprovision>("stolen-sensor-0977").await?;
        self.kubectl(&["delete", "--wait=false"], "10-individual-enrollment-symmetric-key.yaml")?;
        self.kubectl(&["delete", "--wait=false"], "21-enrollment-group-symmetric-key.yaml")?;
        self.gone::<IndividualEnrollment>("thermostat-17").await?;
        self.gone::<EnrollmentGroup>("vending-machines").await?;
        self.until("the EntryDeleted event", || {
            let events = events.clone();
            async move {
                let list = events.list(&Default::default()).await.ok()?;
                list.items.iter().any(|e| e.reason.as_deref() == Some("EntryDeleted")).then_some(())
            }
        })
        .await?;
        // A last look: a refusal logged after the final step still counts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let deadline = self.give_up;
        self.give_up = Instant::now() + Duration::from_secs(3600);
        let last = self.check();
        self.give_up = deadline;
        last
    }
}

/// Runs the scenario with `variant`'s rights in a namespace of its own; the scenario's verdict.
async fn try_variant(variant: &Variant) -> Result<(), String> {
    let client = client().await;
    let engine = Engine::start();
    let ns = TestNamespace::create(&client, "lp").await;
    grant(&client, &ns.name, variant).await;
    let (secret, service) =
        dps_operator::engine_connection::manifests(&engine.info, SERVICE).expect("engine-connection manifests");
    Api::<Secret>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &secret).await.expect("Secret");
    Api::<ProvisioningService>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &service)
        .await
        .expect("ProvisioningService");
    let impersonated = user(&ns.name);
    let mut operator = Operator::start_replica(
        &ns.name,
        "least-privilege",
        // As the chart runs it: leader election on, the Lease in the operator's own namespace.
        &["--leader-election", "--lease-namespace", &ns.name, "--lease-name", "dps-operator"],
        &[("KUBE_RS_DEBUG_IMPERSONATE_USER", impersonated.as_str())],
    );
    let verdict = {
        let mut run = Run {
            client: client.clone(),
            ns: &ns.name,
            operator: &mut operator,
            give_up: Instant::now() + SCENARIO_DEADLINE,
        };
        run.scenario().await
    };
    drop(operator);
    revoke(&client, &ns.name).await;
    ns.delete().await;
    drop(engine);
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_any_verb_or_resource_from_the_charts_rbac_makes_the_operator_fail() {
    ensure_crds(&client().await).await;
    let (cluster, lease) = chart_roles();
    let full = Variant { label: "the chart's RBAC".into(), cluster: cluster.clone(), lease: lease.clone() };
    if let Err(why) = try_variant(&full).await {
        panic!("the operator fails with the chart's own RBAC: {why}");
    }
    let mut variants = Vec::new();
    for (label, less) in reduced(&cluster) {
        variants.push(Variant { label: format!("ClusterRole {label}"), cluster: less, lease: lease.clone() });
    }
    for (label, less) in reduced(&lease) {
        variants.push(Variant { label: format!("Role {label}"), cluster: cluster.clone(), lease: less });
    }
    let total = variants.len();
    let mut needless = Vec::new();
    for batch in variants.chunks(PARALLEL) {
        let verdicts = futures::future::join_all(batch.iter().map(try_variant)).await;
        for (variant, verdict) in batch.iter().zip(verdicts) {
            match verdict {
                Ok(()) => needless.push(variant.label.clone()),
                Err(why) => eprintln!("{}: fails as it should ({why})", variant.label),
            }
        }
    }
    eprintln!(
        "least privilege: {total} reductions checked ({} cluster rules, {} lease rules)",
        cluster.len(),
        lease.len()
    );
    assert!(
        needless.is_empty(),
        "the operator needs none of these; drop them from the chart:\n{}",
        needless.join("\n")
    );
}
