//! `dps-operator run` connects to the cluster, checks the CRDs, and keeps running.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Lines, client, ensure_crds, kubeconfig_path};

#[tokio::test]
async fn operator_run_connects_to_the_cluster_and_waits_for_work() {
    let client = client().await;
    ensure_crds(&client).await;
    let mut operator = Command::new(env!("CARGO_BIN_EXE_dps-operator"))
        .arg("run")
        .env("KUBECONFIG", kubeconfig_path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("operator starts");
    let mut logs = Lines::new(operator.stderr.take().expect("stderr is piped"));
    let connected = logs.wait_for(Duration::from_secs(30), |line| line.contains("waiting for work").then_some(()));
    let still_running = operator.try_wait().expect("status is readable").is_none();
    let _ = operator.kill();
    let _ = operator.wait();
    assert!(connected.is_some(), "operator never reported it was connected; it said:\n{}", logs.seen.join("\n"));
    assert!(still_running, "operator exited instead of waiting for work");
}
