//! The Helm chart lints, renders with default and other values, refuses bad values, and installs, upgrades
//! and uninstalls on the real apiserver (no kubelet here: pods never run, so objects are checked, not rollouts).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde::Deserialize;
use serde_json::Value;

use dps_operator::api::ProvisioningService;

use crate::support::process::run;
use crate::support::{TestNamespace, client, ensure_crds, kubeconfig_path};

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/dps-operator")
}

fn helm() -> Command {
    let mut command = Command::new("helm");
    command.arg("--kubeconfig").arg(kubeconfig_path());
    command
}

fn output(command: &mut Command) -> Output {
    command.output().expect("helm is on PATH (deploy/local/test.sh puts it there)")
}

/// The API version Helm sees once the CRDs are installed (a ProvisioningService is rendered only then).
pub const SERVED: &str = "dps.iot-operator.dev/v1alpha1/ProvisioningService";

/// `helm template dps-operator <chart> --namespace dps-operator <args>` (no cluster needed), as on a
/// cluster that serves the CRDs already.
pub fn helm_template(args: &[&str]) -> String {
    helm_template_on(&["--api-versions", SERVED], args)
}

fn helm_template_on(cluster: &[&str], args: &[&str]) -> String {
    run(Command::new("helm")
        .args(["template", "dps-operator"])
        .arg(chart_dir())
        .args(["--namespace", "dps-operator"])
        .args(cluster)
        .args(args))
}

/// The documents of a YAML stream, as JSON values.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

/// `Kind/name` of every document, sorted.
pub fn kinds_and_names(docs: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = docs
        .iter()
        .map(|d| {
            format!("{}/{}", d["kind"].as_str().unwrap_or_default(), d["metadata"]["name"].as_str().unwrap_or_default())
        })
        .collect();
    out.sort();
    out
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} among {:?}", kinds_and_names(docs)))
}

#[test]
fn helm_lint_passes_in_strict_mode() {
    run(Command::new("helm").args(["lint", "--strict"]).arg(chart_dir()));
    run(Command::new("helm").args(["lint", "--strict", "--set", "engine.enabled=true"]).arg(chart_dir()));
}

#[test]
fn by_default_the_chart_renders_a_hardened_leader_elected_operator_and_its_rbac() {
    let docs = documents(&helm_template(&[]));
    let expected = [
        "ClusterRole/dps-operator",
        "ClusterRoleBinding/dps-operator",
        "CustomResourceDefinition/devicedeprovisions.dps.iot-operator.dev",
        "CustomResourceDefinition/enrollmentgroups.dps.iot-operator.dev",
        "CustomResourceDefinition/individualenrollments.dps.iot-operator.dev",
        "CustomResourceDefinition/provisioningservices.dps.iot-operator.dev",
        "Deployment/dps-operator",
        "NetworkPolicy/dps-operator",
        "PodDisruptionBudget/dps-operator",
        "Role/dps-operator-leader",
        "RoleBinding/dps-operator-leader",
        "Service/dps-operator-metrics",
        "ServiceAccount/dps-operator",
    ];
    assert_eq!(kinds_and_names(&docs), expected);
    let deployment = find(&docs, "Deployment", "dps-operator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--leader-election=true"), "{args:?}");
    // POD_NAMESPACE comes from the Downward API in the pod; here it is given as the flag it stands for.
    let in_pod = ["--lease-namespace", "dps-operator"];
    let command_line = std::iter::once("dps-operator").chain(args.iter().copied()).chain(in_pod);
    let parsed = dps_operator::cli::Cli::try_parse_from(command_line);
    match parsed.map(|cli| cli.command) {
        Ok(dps_operator::cli::Command::Run(run)) => {
            let lease = run.lease().expect("valid lease settings").expect("leader election on");
            assert_eq!(lease.name, "dps-operator", "the Lease the Role names");
        }
        other => panic!("the operator would not start with {args:?}: {other:?}"),
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
    assert!(
        container["resources"]["requests"]["memory"].is_string()
            && container["resources"]["limits"]["memory"].is_string()
    );
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["serviceAccountName"], "dps-operator");
    let service = find(&docs, "Service", "dps-operator-metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(find(&docs, "PodDisruptionBudget", "dps-operator")["apiVersion"], "policy/v1");
    let old = documents(&helm_template(&["--kube-version", "1.20.2"]));
    assert_eq!(
        find(&old, "PodDisruptionBudget", "dps-operator")["apiVersion"],
        "policy/v1beta1",
        "1.20 has no policy/v1"
    );
}

#[test]
fn other_values_render_the_engine_monitoring_and_an_azure_provisioning_service() {
    let docs = documents(&helm_template(&[
        "--set",
        "engine.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "watchNamespace=iot",
        "--set",
        "replicaCount=1",
        "--set",
        "engine.hubs={north,south}",
    ]));
    let names = kinds_and_names(&docs);
    for wanted in [
        "StatefulSet/dps-operator-engine",
        "Service/dps-operator-engine",
        "Service/dps-operator-engine-dps",
        "Service/dps-operator-engine-north",
        "Secret/dps-operator-engine-credentials",
        "Secret/dps-operator-engine-tls",
        "ProvisioningService/local-dps",
        "ServiceMonitor/dps-operator",
        "PrometheusRule/dps-operator",
        "NetworkPolicy/dps-operator-engine",
    ] {
        assert!(names.contains(&wanted.to_string()), "{wanted} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("PodDisruptionBudget/")), "one replica gets no PDB: {names:?}");
    let deployment = find(&docs, "Deployment", "dps-operator");
    assert!(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string().contains("--watch-namespace=iot")
    );

    // The ProvisioningService reads the engine's Secret, whose connection strings name the advertised hosts.
    let service = find(&docs, "ProvisioningService", "local-dps");
    let secret = find(&docs, "Secret", "dps-operator-engine-credentials");
    assert_eq!(service["spec"]["connectionStringSecretRef"]["name"], "dps-operator-engine-credentials");
    assert_eq!(service["spec"]["hubs"][1]["hostName"], "dps-operator-engine-south.dps-operator.svc");
    let dps = secret["stringData"]["dps"].as_str().expect("dps connection string");
    assert!(dps.starts_with(
        "HostName=dps-operator-engine-dps.dps-operator.svc;SharedAccessKeyName=provisioningserviceowner;"
    ));
    let engine = find(&docs, "StatefulSet", "dps-operator-engine");
    let args = engine["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    for flag in ["--keys-dir=/keys", "--hub=south", "--advertise-host=south=dps-operator-engine-south.dps-operator.svc"]
    {
        assert!(args.contains(flag), "{flag} missing from {args}");
    }
    assert!(engine["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"].is_string());

    let rules = find(&docs, "PrometheusRule", "dps-operator")["spec"]["groups"][0]["rules"].to_string();
    for metric in ["dps_operator_deletions_in_progress", "dps_operator_resources_stalled", "status=\\\"429\\\""] {
        assert!(rules.contains(metric), "the alerts do not use {metric}: {rules}");
    }

    let azure = documents(&helm_template(&[
        "--set",
        "provisioningService.create=true",
        "--set",
        "provisioningService.existingSecret=azure-dps",
        "--set",
        "provisioningService.hubs[0].hostName=hub.azure-devices.net",
        "--set",
        "provisioningService.hubs[0].secretKey=hub",
    ]));
    let service = find(&azure, "ProvisioningService", "local-dps");
    assert_eq!(service["spec"]["connectionStringSecretRef"]["name"], "azure-dps");
    assert_eq!(service["spec"]["hubs"][0]["connectionStringSecretRef"]["key"], "hub");
    assert!(!kinds_and_names(&azure).iter().any(|n| n.starts_with("StatefulSet/")), "no engine for Azure");
}

#[test]
fn on_the_install_that_brings_the_crds_the_provisioning_service_waits_for_the_next_upgrade() {
    // Helm maps every object before creating any, so a ProvisioningService next to its new CRD would fail
    // the whole install ("no matches for kind"): it is left out, and the notes say to upgrade once.
    let fresh = documents(&helm_template_on(&[], &["--set", "engine.enabled=true"]));
    let names = kinds_and_names(&fresh);
    assert!(!names.iter().any(|n| n.starts_with("ProvisioningService/")), "{names:?}");
    assert!(names.contains(&"StatefulSet/dps-operator-engine".to_string()), "the engine itself is installed");
    let notes = run(Command::new("helm")
        .args(["install", "dps-operator", "--dry-run=client", "--set", "engine.enabled=true"])
        .arg(chart_dir()));
    assert!(notes.contains("helm upgrade dps-operator"), "the notes do not say to upgrade:\n{notes}");
    let served = documents(&helm_template(&["--set", "engine.enabled=true"]));
    assert!(kinds_and_names(&served).contains(&"ProvisioningService/local-dps".to_string()));
}

#[tokio::test]
async fn bad_values_fail_the_install_before_anything_is_created() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "chart-bad").await;
    for bad in ["replicaCount=-1", "logFormat=xml", "engine.hubs={dps}", "metrics.port=0", "noSuchValue=1"] {
        let out = output(
            helm()
                .args(["install", "bad", "--namespace", &ns.name, "--set", "crds.enabled=false", "--set", bad])
                .arg(chart_dir()),
        );
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "helm install accepted {bad}");
        assert!(said.contains("values don't meet the specifications of the schema"), "{bad}: {said}");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(deployments.get_opt("bad-dps-operator").await.expect("readable").is_none());
    ns.delete().await;
}

#[tokio::test]
async fn helm_install_upgrade_and_uninstall_succeed_on_the_local_control_plane() {
    let client = client().await;
    ensure_crds(&client).await;
    let ns = TestNamespace::create(&client, "chart").await;
    let release = format!("dps-{}", ns.name);
    let full = format!("{release}-dps-operator");
    // A plain install: the CRDs too (without their CEL rules on this 1.20 apiserver, which Helm 4 would
    // refuse), taking over the ones the test run installed; the engine in-cluster.
    run(helm()
        .args(["install", &release, "--namespace", &ns.name, "--take-ownership", "--set", "engine.enabled=true"])
        .arg(chart_dir()));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let deployment = deployments.get(&full).await.expect("the chart's Deployment exists");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
    Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
        .get(&format!("{full}-engine"))
        .await
        .expect("the engine's StatefulSet exists");
    Api::<Service>::namespaced(client.clone(), &ns.name)
        .get(&format!("{full}-metrics"))
        .await
        .expect("metrics Service");
    Api::<ProvisioningService>::namespaced(client.clone(), &ns.name)
        .get("local-dps")
        .await
        .expect("ProvisioningService");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let credentials = format!("{full}-engine-credentials");
    let keys_before = secrets.get(&credentials).await.expect("engine credentials").data;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("individualenrollments.dps.iot-operator.dev").await.expect("CRD");
    let annotations = crd.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("meta.helm.sh/release-name"), Some(&release), "the release owns the CRDs");

    run(helm()
        .args(["upgrade", &release, "--namespace", &ns.name, "--reuse-values", "--set", "replicaCount=3"])
        .arg(chart_dir()));
    let deployment = deployments.get(&full).await.expect("Deployment after upgrade");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let keys_after = secrets.get(&credentials).await.expect("engine credentials after upgrade").data;
    assert!(keys_before.is_some() && keys_before == keys_after, "an upgrade must keep the engine's keys");

    run(helm().args(["uninstall", &release, "--namespace", &ns.name]));
    assert!(deployments.get_opt(&full).await.expect("readable").is_none(), "uninstall removes the Deployment");
    assert!(crds.get_opt("individualenrollments.dps.iot-operator.dev").await.expect("readable").is_some(), "crds.keep");
    ns.delete().await;
}
