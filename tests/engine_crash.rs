//! `kill -9` loses no acknowledged write: the engine binary is killed while clients write, restarted on the
//! same data directory, and every acknowledged enrollment is still there.

mod engine_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use dps_operator::engine::EngineInfo;
use engine_common as common;
use serde_json::json;

fn spawn(dir: &std::path::Path, listen: &str) -> (Child, EngineInfo) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dps-operator"))
        .args(["engine", "--data-dir"])
        .arg(dir)
        .args(["--listen", listen, "--hub", "h1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn engine");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("ready line");
    assert!(line.starts_with("engine ready "), "{line}");
    let info: EngineInfo =
        serde_json::from_slice(&std::fs::read(dir.join("engine.json")).expect("engine.json")).expect("parse");
    (child, info)
}

#[tokio::test]
async fn kill_9_keeps_acknowledged_writes() {
    let dir = common::temp_dir("crash");
    let pid = std::process::id();
    let ip = format!("127.{}.{}.{}", 32 + pid % 32, pid / 32 % 250, 200 + pid % 50);
    let (mut child, info) = spawn(&dir, &format!("{ip}:0"));
    let c = common::client(&info, None);
    let token = common::service_token(&info);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (c, info, token) = (c.clone(), info.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..2000 {
                let id = format!("w{w}-{i}");
                let r = c
                    .put(format!("{}/enrollments/{id}?api-version=2021-10-01", info.provisioning_service.endpoint))
                    .header("authorization", &token)
                    .json(&json!({ "attestation": { "type": "symmetricKey" } }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => acked.push(id),
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    assert!(!acked.is_empty(), "no write was acknowledged before the kill");
    let port = info.provisioning_service.endpoint.rsplit(':').next().expect("port").to_string();
    let (mut child, info) = spawn(&dir, &format!("{ip}:{port}"));
    let c = common::client(&info, None);
    let token = common::service_token(&info);
    let mut missing = 0;
    for id in &acked {
        let r = c
            .get(format!("{}/enrollments/{id}?api-version=2021-10-01", info.provisioning_service.endpoint))
            .header("authorization", &token)
            .send()
            .await
            .expect("get");
        if !r.status().is_success() {
            missing += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(missing, 0, "{missing} of {} acknowledged writes lost", acked.len());
}
