//! The RBAC shipped in deploy/base and the Helm chart is enough for the operator: an operator running as
//! the ServiceAccount it binds (by impersonation) serves the examples end to end, and the chart grants the
//! same cluster rights as kustomize.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde::Deserialize;
use serde_json::Value;

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment};

use crate::controller_individual::event_reasons;
use crate::support::device::{Registration, register, with_key};
use crate::support::kubectl;
use crate::support::operator::Bed;
use crate::support::process::run;

/// The user Kubernetes authenticates the ServiceAccount of deploy/base as.
const OPERATOR_ACCOUNT: &str = "system:serviceaccount:dps-operator:dps-operator";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The rules of the one ClusterRole in a YAML stream, each rule's lists sorted so order does not matter.
fn cluster_role_rules(yaml: &str) -> Vec<PolicyRule> {
    let role = serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .find(|doc| doc["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let role: ClusterRole = serde_json::from_value(role).expect("a valid ClusterRole");
    let mut rules = role.rules.unwrap_or_default();
    for rule in &mut rules {
        for list in [&mut rule.api_groups, &mut rule.resources].into_iter().flatten() {
            list.sort();
        }
        rule.verbs.sort();
    }
    rules
}

#[tokio::test]
async fn an_operator_with_only_the_shipped_rbac_serves_the_examples_end_to_end() {
    run(kubectl().arg("apply").arg("-f").arg(root().join("deploy/base/namespace.yaml")));
    run(kubectl().args(["apply", "-n", "dps-operator", "-f"]).arg(root().join("deploy/base/rbac.yaml")));
    // The apiserver authorizes every request as the ServiceAccount: a missing verb fails the test.
    let bed = Bed::start_with("rbac", &[("KUBE_RS_DEBUG_IMPERSONATE_USER", OPERATOR_ACCOUNT)]).await;
    for file in
        ["05-certificates.yaml", "10-individual-enrollment-symmetric-key.yaml", "11-individual-enrollment-x509.yaml"]
    {
        run(kubectl().args(["apply", "-n", &bed.ns.name, "-f"]).arg(root().join("examples").join(file)));
    }
    // Generated keys: a Secret created; X.509 from a ConfigMap; finalizers and status written.
    bed.wait_ready::<IndividualEnrollment>("thermostat-17").await;
    bed.wait_ready::<IndividualEnrollment>("sensor-0042").await;
    let secret = bed.api::<k8s_openapi::api::core::v1::Secret>().get("thermostat-17-keys").await.expect("Secret");
    let key = String::from_utf8(secret.data.expect("data")["primaryKey"].0.clone()).expect("UTF-8 key");
    let admitted = register(&bed.engine, "thermostat-17", with_key(&key)).await;
    assert!(matches!(admitted, Registration::Assigned { .. }), "{admitted:?}");

    run(kubectl()
        .args(["delete", "--wait=false", "-n", &bed.ns.name, "-f"])
        .arg(root().join("examples/10-individual-enrollment-symmetric-key.yaml")));
    bed.wait_gone::<IndividualEnrollment>("thermostat-17").await;
    let reasons = event_reasons(&bed, "IndividualEnrollment", "thermostat-17").await;
    assert!(reasons.iter().any(|r| r == "EntryDeleted"), "the operator could not record events: {reasons:?}");
    assert!(!bed.operator.log().contains("forbidden"), "the operator was refused something:\n{}", bed.operator.log());
    bed.ns.delete().await;
}

#[tokio::test]
async fn an_operator_with_only_the_shipped_rbac_serves_groups_and_deprovisions() {
    run(kubectl().arg("apply").arg("-f").arg(root().join("deploy/base/namespace.yaml")));
    run(kubectl().args(["apply", "-n", "dps-operator", "-f"]).arg(root().join("deploy/base/rbac.yaml")));
    let bed = Bed::start_with("rbac-groups", &[("KUBE_RS_DEBUG_IMPERSONATE_USER", OPERATOR_ACCOUNT)]).await;
    for file in ["05-certificates.yaml", "20-enrollment-group-x509.yaml", "21-enrollment-group-symmetric-key.yaml"] {
        run(kubectl().args(["apply", "-n", &bed.ns.name, "-f"]).arg(root().join("examples").join(file)));
    }
    bed.wait_ready::<EnrollmentGroup>("fleet-intermediate").await;
    bed.wait_ready::<EnrollmentGroup>("vending-machines").await;
    run(kubectl()
        .args(["apply", "-n", &bed.ns.name, "-f"])
        .arg(root().join("examples/revoke/deprovision-group-device.yaml")));
    bed.wait_ready::<DeviceDeprovision>("stolen-sensor-0977").await;
    run(kubectl().args(["delete", "--wait=false", "-n", &bed.ns.name, "enrollmentgroup", "vending-machines"]));
    bed.wait_gone::<EnrollmentGroup>("vending-machines").await;
    assert!(!bed.operator.log().contains("forbidden"), "the operator was refused something:\n{}", bed.operator.log());
    bed.ns.delete().await;
}

#[test]
fn the_chart_grants_the_same_cluster_rights_as_kustomize() {
    let chart = run(Command::new("helm").arg("template").arg("x").arg(root().join("charts/dps-operator")));
    let base = std::fs::read_to_string(root().join("deploy/base/rbac.yaml")).expect("deploy/base/rbac.yaml");
    assert_eq!(cluster_role_rules(&chart), cluster_role_rules(&base));
}
