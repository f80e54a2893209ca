//! The committed CRD YAML (in `crds/` and in the chart) is what the code generates.

use std::path::Path;

use dps_operator::api;

fn assert_matches_generated(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, crd) in api::crds() {
        let generated = api::crd_yaml(&crd).expect("CRD renders as YAML");
        let path = root.join(dir).join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale or missing; regenerate with `cargo run -- crds --out-dir {dir}`",
            path.display()
        );
    }
}

#[test]
fn committed_crds_match_the_generated_ones() {
    assert_matches_generated("crds");
}

#[test]
fn chart_crds_match_the_generated_ones() {
    assert_matches_generated("charts/dps-operator/crds");
}
