//! The committed CRD YAML (in `crds/`) and the chart's CRD templates are what the code generates.

use std::path::Path;

use dps_operator::{api, chart_crds};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn assert_committed(dir: &str, render: impl Fn(&CustomResourceDefinition) -> String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, crd) in api::crds() {
        let generated = render(&crd);
        let path = root.join(dir).join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale or missing; regenerate with \
             `cargo run -- crds --out-dir crds --chart-templates-dir charts/dps-operator/templates/crds`",
            path.display()
        );
    }
}

#[test]
fn committed_crds_match_the_generated_ones() {
    assert_committed("crds", |crd| api::crd_yaml(crd).expect("CRD renders as YAML"));
}

#[test]
fn chart_crd_templates_match_the_generated_ones() {
    assert_committed("charts/dps-operator/templates/crds", |crd| {
        chart_crds::crd_template(crd).expect("CRD renders as a template")
    });
}

#[test]
fn the_chart_has_no_crds_directory_helm_would_install_unconditionally() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/dps-operator/crds");
    assert!(!dir.exists(), "{} would be installed as is, CEL rules and all, on every version", dir.display());
}
