//! deploy/: the kustomize overlays produce the same objects as the chart's defaults (the operator alone, and
//! with the in-cluster engine), and `kubectl apply -k` installs them on the local control plane.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;
use serde_json::Value;

use dps_operator::api::ProvisioningService;

use super::chart::{documents, helm_template, kinds_and_names};
use crate::support::process::run;
use crate::support::{client, ensure_crds, kubectl};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize <dir>` (no cluster needed).
fn kustomize(dir: &Path) -> Vec<Value> {
    documents(&run(Command::new("kubectl").arg("kustomize").arg(dir)))
}

/// The engine overlay needs its generated Secrets; made once per checkout (git-ignored).
fn engine_overlay() -> PathBuf {
    let dir = root().join("deploy/overlays/engine");
    static SECRETS: std::sync::Once = std::sync::Once::new();
    SECRETS.call_once(|| {
        run(&mut Command::new(dir.join("generate-secrets.sh")));
    });
    dir
}

/// The rules of the one `kind` (ClusterRole or Role) with every list sorted, so only content counts.
fn rules(docs: &[Value], kind: &str) -> Vec<Value> {
    let role = docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("a {kind}"));
    let mut rules = role["rules"].as_array().cloned().unwrap_or_default();
    for rule in &mut rules {
        for key in ["apiGroups", "resources", "resourceNames", "verbs"] {
            if let Some(list) = rule[key].as_array_mut() {
                list.sort_by_key(|v| v.to_string());
            }
        }
    }
    rules
}

/// What the chart renders (with `args`), minus what kustomize adds on its own: the namespace.
fn chart_objects(args: &[&str]) -> Vec<Value> {
    documents(&helm_template(args))
}

fn without_namespace(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter().filter(|d| d["kind"] != "Namespace").collect()
}

fn assert_same_objects(kustomized: &[Value], chart: &[Value]) {
    assert_eq!(kinds_and_names(kustomized), kinds_and_names(chart), "kustomize and the chart make other objects");
    for kind in ["ClusterRole", "Role"] {
        assert_eq!(rules(kustomized, kind), rules(chart, kind), "kustomize and the chart grant other {kind} rights");
    }
    let deployment = |docs: &[Value]| {
        let d = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment").clone();
        (d["spec"]["replicas"].clone(), d["spec"]["template"]["spec"]["containers"][0]["args"].clone())
    };
    assert_eq!(deployment(kustomized), deployment(chart), "the Deployments run the operator differently");
}

#[test]
fn the_operator_overlay_makes_the_same_objects_as_the_charts_defaults() {
    let kustomized = without_namespace(kustomize(&root().join("deploy/overlays/operator")));
    assert_same_objects(&kustomized, &chart_objects(&[]));
}

#[test]
fn the_engine_overlay_makes_the_same_objects_as_the_chart_with_the_engine() {
    let kustomized = without_namespace(kustomize(&engine_overlay()));
    let chart = chart_objects(&["--set", "engine.enabled=true"]);
    assert_same_objects(&kustomized, &chart);
    let args = |docs: &[Value]| {
        docs.iter().find(|d| d["kind"] == "StatefulSet").expect("the engine")["spec"]["template"]["spec"]["containers"]
            [0]["args"]
            .clone()
    };
    assert_eq!(args(&kustomized), args(&chart), "the engines run differently");
    let spec =
        |docs: &[Value]| docs.iter().find(|d| d["kind"] == "ProvisioningService").expect("local-dps")["spec"].clone();
    assert_eq!(spec(&kustomized), spec(&chart));
}

#[tokio::test]
async fn kubectl_apply_k_installs_the_operator_and_the_engine() {
    let client = client().await;
    ensure_crds(&client).await;
    // 1.20 needs the component that serves the PodDisruptionBudget as policy/v1beta1; kustomize takes
    // only relative paths, so the overlay lives in the test's own directory below the repository.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kustomize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("directory");
    let relative = pathdiff(&dir, root());
    engine_overlay();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources: [{up}/deploy/overlays/engine]\ncomponents: [{up}/deploy/components/kubernetes-1.20]\n",
            up = relative
        ),
    )
    .expect("kustomization");
    // --validate=false: 1.20's schema does not know x-kubernetes-validations (that apiserver drops them).
    run(kubectl().args(["apply", "--validate=false", "-k"]).arg(&dir));
    let ns = "dps-operator";
    Api::<Deployment>::namespaced(client.clone(), ns).get("dps-operator").await.expect("the operator's Deployment");
    Api::<StatefulSet>::namespaced(client.clone(), ns).get("dps-operator-engine").await.expect("the engine");
    Api::<ProvisioningService>::namespaced(client.clone(), ns).get("local-dps").await.expect("local-dps");
    // Applying again changes nothing and still succeeds.
    run(kubectl().args(["apply", "--validate=false", "-k"]).arg(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `../..` from `dir` up to `root` (dir lies below root).
fn pathdiff(dir: &Path, root: &Path) -> String {
    let below = dir.strip_prefix(root).expect("the target directory lies in the repository");
    vec![".."; below.components().count()].join("/")
}
