//! `dps-operator run` connects to the cluster, checks the CRDs, keeps running, and stops cleanly on SIGTERM.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Lines, client, ensure_crds, kubeconfig_path};

const READY: &str = "dps-operator connected; CRDs present; waiting for work";
const STOPPING: &str = "shutting down";

/// The message and timestamp of a JSON log line.
fn event(line: &str) -> Option<(String, jiff::Timestamp)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let message = v["fields"]["message"].as_str()?.to_string();
    let at = v["timestamp"].as_str()?.parse().ok()?;
    Some((message, at))
}

/// Waits for the child to exit, at most `deadline`.
fn exit_within(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let give_up = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("status is readable") {
            return Some(status);
        }
        if Instant::now() >= give_up {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn operator_run_connects_finds_the_crds_and_runs_until_sigterm() {
    let client = client().await;
    ensure_crds(&client).await;
    let mut operator = Command::new(env!("CARGO_BIN_EXE_dps-operator"))
        // An empty namespace of its own, so it never reconciles (and races) other tests' objects.
        .args(["--log-format", "json", "run", "--watch-namespace", "operator-run-watches-nothing"])
        .env("KUBECONFIG", kubeconfig_path())
        .env("RUST_LOG", "info")
        .env("DPS_OPERATOR_METRICS_ADDR", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .expect("operator starts");
    let mut logs = Lines::new(operator.stderr.take().expect("stderr is piped"));
    let ready = logs.wait_for(Duration::from_secs(30), |line| event(line).filter(|(m, _)| m == READY));
    // Still running after it said so: it must begin shutting down only after SIGTERM, not on its own.
    let signalled_at = jiff::Timestamp::now();
    let signalled = Command::new("kill").args(["-TERM", &operator.id().to_string()]).status();
    let stopping = logs.wait_for(Duration::from_secs(10), |line| event(line).filter(|(m, _)| m == STOPPING));
    let exit = exit_within(&mut operator, Duration::from_secs(10));
    if exit.is_none() {
        let _ = operator.kill();
        let _ = operator.wait();
    }
    let said = logs.seen.join("\n");
    assert!(ready.is_some(), "operator never reported it connected and found the CRDs; it said:\n{said}");
    assert!(signalled.is_ok_and(|s| s.success()), "SIGTERM could not be sent");
    let (_, stopping_at) = stopping.unwrap_or_else(|| panic!("operator did not log '{STOPPING}'; it said:\n{said}"));
    assert!(stopping_at >= signalled_at, "operator stopped at {stopping_at}, before SIGTERM at {signalled_at}");
    let exit = exit.expect("operator exits within 10 s of SIGTERM");
    assert!(exit.success(), "operator exited with {exit} on SIGTERM");
}

#[test]
fn sigterm_while_the_operator_is_still_connecting_stops_it_cleanly() {
    // An apiserver that takes the connection and never answers: the operator stays in its connecting step.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = silent.local_addr().expect("bound");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("directory");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: silent\n  cluster:\n    server: https://{address}\n    \
             insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  \
             context:\n    cluster: silent\n    user: u\ncurrent-context: c\n"
        ),
    )
    .expect("kubeconfig");
    let mut operator = Command::new(env!("CARGO_BIN_EXE_dps-operator"))
        .args(["--log-format", "json", "run", "--watch-namespace", "nowhere"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .env("DPS_OPERATOR_METRICS_ADDR", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .expect("operator starts");
    let mut logs = Lines::new(operator.stderr.take().expect("stderr is piped"));
    let serving = logs.wait_for(Duration::from_secs(30), |line| {
        event(line).filter(|(m, _)| m == "serving metrics and health probes")
    });
    let signalled = Command::new("kill").args(["-TERM", &operator.id().to_string()]).status();
    let exit = exit_within(&mut operator, Duration::from_secs(10));
    if exit.is_none() {
        let _ = operator.kill();
        let _ = operator.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(silent);
    assert!(serving.is_some(), "the operator never served its probes: {:?}", logs.seen);
    assert!(signalled.is_ok_and(|s| s.success()), "SIGTERM could not be sent");
    let exit = exit.expect("the operator exits within 10 s of SIGTERM");
    assert!(exit.success(), "SIGTERM while connecting ended the operator with {exit}, not a clean stop");
}
