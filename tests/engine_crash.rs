//! `kill -9` loses no acknowledged write: the engine binary is killed while clients write, restarted on the
//! same data directory, and every acknowledged enrollment is still there.

mod engine_common;

use std::process::Child;

use dps_operator::engine::EngineInfo;
use engine_common as common;
use serde_json::json;

fn spawn(dir: &std::path::Path, listen: &str) -> (Child, EngineInfo) {
    common::spawn_engine_process(dir, &["--listen", listen, "--hub", "h1"])
}

/// How many acknowledged writes the engine is killed after (while more are in flight).
const ACKED_BEFORE_KILL: usize = 300;

#[tokio::test]
async fn kill_9_keeps_acknowledged_writes() {
    let dir = common::temp_dir("crash");
    let pid = std::process::id();
    let ip = format!("127.{}.{}.{}", 32 + pid % 32, pid / 32 % 250, 200 + pid % 50);
    let (mut child, info) = spawn(&dir, &format!("{ip}:0"));
    let c = common::client(&info, None);
    let token = common::service_token(&info);
    // Writers run until the engine dies under them, reporting each acknowledged write as it comes.
    let (acks, mut acked_so_far) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (c, info, token, acks) = (c.clone(), info.clone(), token.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let id = format!("w{w}-{i}");
                let r = c
                    .put(format!("{}/enrollments/{id}?api-version=2021-10-01", info.provisioning_service.endpoint))
                    .header("authorization", &token)
                    .json(&json!({ "attestation": { "type": "symmetricKey" } }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        acked.push(id);
                        let _ = acks.send(());
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    drop(acks);
    // Kill in the middle of the stream of writes, once enough of them were acknowledged.
    let enough = async {
        for _ in 0..ACKED_BEFORE_KILL {
            acked_so_far.recv().await.expect("writers keep writing until the kill");
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), enough)
        .await
        .expect("the engine acknowledges writes within a minute");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    assert!(acked.len() >= ACKED_BEFORE_KILL, "{} writes acknowledged before the kill", acked.len());
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
