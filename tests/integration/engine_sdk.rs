//! The official Azure IoT Node.js SDKs (service, registry, device over HTTP), unchanged, against the engine,
//! using only engine.json and its CA (tests/sdk-compat). The engine listens on 443 because some SDKs cannot
//! take a port; each endpoint has its own loopback address.

use std::path::Path;
use std::process::Command;

use crate::support::engine::Engine;

#[tokio::test]
async fn official_azure_iot_sdks_work_unchanged_against_the_engine() {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk-compat");
    assert!(
        harness.join("node_modules").is_dir(),
        "run `npm ci` in tests/sdk-compat first (deploy/local/test.sh does)"
    );
    let engine = Engine::start_on_port(443);
    let ca = engine.info.ca_certificate.clone().expect("engine.json names its CA");
    let output = Command::new("bash")
        .arg(harness.join("run-all.sh"))
        .arg(engine.engine_json())
        .env("NODE_EXTRA_CA_CERTS", ca)
        .output()
        .expect("bash runs the harness");
    let report = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "an official SDK failed against the engine:\n{report}");
    assert!(!report.contains("FAIL"), "a step failed:\n{report}");
}
