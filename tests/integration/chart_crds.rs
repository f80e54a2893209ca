//! The chart's CRDs are the generated ones: with their CEL rules from Kubernetes 1.25, without them below
//! (where Helm 4 would refuse them and the controller enforces the rules itself), and behind `crds.*`.

use serde_json::Value;

use dps_operator::api;

use super::chart::{documents, helm_template};

/// Removes every `x-kubernetes-validations` key, at any depth.
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

/// The CRDs a rendering holds, by name.
fn rendered_crds(args: &[&str]) -> Vec<(String, Value)> {
    documents(&helm_template(args))
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| (d["metadata"]["name"].as_str().unwrap_or_default().to_string(), d))
        .collect()
}

fn generated() -> Vec<(String, Value)> {
    api::crds()
        .into_iter()
        .map(|(_, crd)| {
            let value = serde_json::to_value(&crd).expect("CRD serialises");
            (value["metadata"]["name"].as_str().unwrap_or_default().to_string(), value)
        })
        .collect()
}

fn assert_same_crds(rendered: &[(String, Value)], expected: &[(String, Value)], version: &str) {
    assert_eq!(rendered.len(), expected.len(), "kube {version}: {} CRDs rendered", rendered.len());
    for (name, want) in expected {
        let (_, got) = rendered.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} not rendered"));
        assert_eq!(got["apiVersion"], want["apiVersion"], "{name}");
        assert!(got["spec"] == want["spec"], "kube {version}: the chart's {name} differs from the generated one");
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones_with_cel_rules_from_kubernetes_1_25() {
    let expected = generated();
    let cel_rules = |crds: &[(String, Value)]| {
        crds.iter().map(|(_, c)| c.to_string().matches("x-kubernetes-validations").count()).sum::<usize>()
    };
    assert!(cel_rules(&expected) > 0, "the generated CRDs carry CEL rules");
    for version in ["1.25.0", "1.30.0"] {
        assert_same_crds(&rendered_crds(&["--kube-version", version]), &expected, version);
    }
}

#[test]
fn below_kubernetes_1_25_the_charts_crds_leave_out_only_the_cel_rules() {
    let expected: Vec<(String, Value)> = generated()
        .into_iter()
        .map(|(name, mut crd)| {
            without_cel(&mut crd);
            (name, crd)
        })
        .collect();
    for version in ["1.20.2", "1.24.9"] {
        let rendered = rendered_crds(&["--kube-version", version]);
        assert!(!rendered.iter().any(|(_, c)| c.to_string().contains("x-kubernetes-validations")), "{version}");
        assert_same_crds(&rendered, &expected, version);
    }
}

#[test]
fn crds_are_kept_on_uninstall_unless_told_and_left_out_when_disabled() {
    let keep = |crd: &Value| crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep";
    let default = rendered_crds(&[]);
    assert_eq!(default.len(), 4);
    assert!(default.iter().all(|(_, c)| keep(c)), "crds.keep is on by default");
    let dropped = rendered_crds(&["--set", "crds.keep=false"]);
    assert!(dropped.iter().all(|(_, c)| !keep(c)), "crds.keep=false removes the annotation");
    assert!(rendered_crds(&["--set", "crds.enabled=false"]).is_empty(), "crds.enabled=false renders none");
}
