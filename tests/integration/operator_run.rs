//! `dps-operator run` connects to the cluster, checks the CRDs, and keeps running.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{client, ensure_crds, kubeconfig_path};

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
    let stderr = operator.stderr.take().expect("stderr is piped");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let connected = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) if line.contains("waiting for work") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let still_running = operator.try_wait().expect("status is readable").is_none();
    let _ = operator.kill();
    let _ = operator.wait();
    assert!(connected, "operator never reported it was connected; it said:\n{}", seen.join("\n"));
    assert!(still_running, "operator exited instead of waiting for work");
}
