//! The Helm chart lints, and installs on the real apiserver with its Deployment and RBAC.

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::Api;

use crate::support::{TestNamespace, client, ensure_crds, kubeconfig_path};

fn helm() -> Command {
    let mut command = Command::new("helm");
    command.arg("--kubeconfig").arg(kubeconfig_path());
    command
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("helm is on PATH (deploy/local/test.sh puts it there)");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test]
async fn helm_chart_lints_and_installs_with_its_deployment_and_rbac() {
    let client = client().await;
    ensure_crds(&client).await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/dps-operator");
    run(helm().args(["lint", "--strict", chart]));

    let ns = TestNamespace::create(&client, "chart").await;
    let release = format!("dps-{}", ns.name);
    // Helm 4 applies CRDs server-side, which a 1.20 apiserver refuses because of the CEL rules it does not
    // know; the CRDs are already installed (as `kubectl apply --validate=false` does), so skip them here.
    run(helm().args(["install", &release, chart, "--namespace", &ns.name, "--skip-crds", "--wait=hookOnly"]));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let deployment = deployments.get(&format!("{release}-dps-operator")).await.expect("the chart's Deployment exists");
    let container = &deployment.spec.and_then(|s| s.template.spec).expect("pod spec").containers[0];
    assert_eq!(container.args.as_deref(), Some(&["run".to_string()][..]));
    let probe_path = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
        probe.and_then(|p| p.http_get.as_ref()).and_then(|g| g.path.clone())
    };
    assert_eq!(probe_path(container.readiness_probe.as_ref()).as_deref(), Some("/readyz"));
    assert_eq!(probe_path(container.liveness_probe.as_ref()).as_deref(), Some("/healthz"));
    let role = Api::<ClusterRole>::all(client.clone())
        .get(&format!("{release}-dps-operator"))
        .await
        .expect("the chart's ClusterRole exists");
    let rules = role.rules.unwrap_or_default();
    assert!(
        rules
            .iter()
            .any(|r| r.resources.as_ref().is_some_and(|res| res.contains(&"individualenrollments/finalizers".into()))),
        "ClusterRole lacks finalizer rights: {rules:?}"
    );
    run(helm().args(["uninstall", &release, "--namespace", &ns.name]));
    ns.delete().await;
}
