//! Fleet benchmarks on the local control plane and engine: 10,000 IndividualEnrollments becoming Ready
//! against a bare client doing the same apiserver writes, an operator restart over them, a group of many
//! devices deleted, and the operator's memory with 10,000 objects of each kind. Prints figures against
//! the targets of the production issue; asserts nothing about time.
//!
//! `deploy/local/bench.sh` (or `cargo bench --bench fleet` with the tools of `prepare.sh` on PATH).
//! Environment: `FLEET_OBJECTS` (10000), `FLEET_DEVICES` (10000), `FLEET_BUDGET_DEVICES` (600, the group
//! deleted at Azure's S1 registry budget), `FLEET_SCENARIOS` (comma-separated subset of
//! `ready,restart,group,memory`).

#[allow(dead_code, unused_imports)]
#[path = "../../tests/integration/support/mod.rs"]
mod support;

mod figures;
mod group;
mod memory;
mod ready;
mod watch;

use std::time::Duration;

use figures::Figures;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn wanted(scenario: &str) -> bool {
    std::env::var("FLEET_SCENARIOS").map_or(true, |list| list.split(',').any(|s| s.trim() == scenario))
}

/// Operator settings every scenario shares: quiet logs (the benchmark measures the work, not the
/// logging) and a fixed metrics port to read reconcile counts from.
fn operator_env(metrics_port: u16) -> Vec<(String, String)> {
    vec![
        ("RUST_LOG".into(), "warn".into()),
        ("DPS_OPERATOR_METRICS_ADDR".into(), format!("127.0.0.1:{metrics_port}")),
        // Ten minutes, as by default: no resync falls inside a scenario's measurement.
        ("DPS_OPERATOR_RESYNC_SECONDS".into(), "600".into()),
    ]
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let objects = env_number("FLEET_OBJECTS", 10_000);
        let devices = env_number("FLEET_DEVICES", 10_000);
        let budget_devices = env_number("FLEET_BUDGET_DEVICES", 600);
        let mut figures = Figures::default();
        let deadline = Duration::from_secs(3600);
        if wanted("ready") || wanted("restart") {
            ready::run(objects, wanted("restart"), deadline, &mut figures).await;
        }
        if wanted("group") {
            group::run(devices, budget_devices, deadline, &mut figures).await;
        }
        if wanted("memory") {
            memory::run(objects, deadline, &mut figures).await;
        }
        figures.print();
    });
}
