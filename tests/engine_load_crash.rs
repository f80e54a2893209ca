//! The engine under load, faults and `kill -9`: 64 simulated devices register without pause while writers
//! create, update, disable and enable again enrollments, the engine answers some requests with injected faults, and it is
//! killed with SIGKILL every few seconds and restarted on the same data directory. No acknowledged write may
//! be lost, and no registration sent after a disable was acknowledged may be admitted (unless an enable was
//! sent before its answer).
//!
//! Short by default (20 s); `DPS_LOAD_SECONDS=N` or `DPS_LONG=1` (180 s) runs longer; `DPS_SEED` replays.

mod engine_common;
#[path = "integration/support/figures.rs"]
mod figures;

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dps_operator::engine::EngineInfo;
use engine_common as common;
use serde_json::{Value, json};

const DEVICES: usize = 64;
const WRITERS: usize = 8;
/// Faults on top of the kills: some requests fail, some lose their answer before or after the write.
const FAULTS: &str = "api=*,errorRate=0.03,status=503,dropRate=0.02,dropAfterApplyRate=0.02";
const SVC: &str = "api-version=2021-10-01";
const DEV: &str = "api-version=2021-06-01";

fn spawn(dir: &Path, listen: &str, seed: u64) -> (Child, EngineInfo) {
    let seed = seed.to_string();
    common::spawn_engine_process(dir, &["--listen", listen, "--hub", "h1", "--fault", FAULTS, "--fault-seed", &seed])
}

/// A change of an enrollment's status, as the test saw it.
#[derive(Debug, Clone, Copy)]
enum Toggle {
    /// A write disabling it was acknowledged at this time.
    DisableAcked(Instant),
    /// A write enabling it was sent at this time (it may apply from then on).
    EnableSent(Instant),
}

/// What the test knows: the last acknowledged content of each enrollment, the status changes of each, and
/// every registration whose outcome came back.
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, Value>,
    toggles: HashMap<String, Vec<Toggle>>,
    /// (registration ID, when the register request was sent, when its outcome came back, admitted).
    registrations: Vec<(String, Instant, Instant, bool)>,
}

impl Ledger {
    /// Whether a registration of `id` sent at `sent` and answered at `answered` came after an acknowledged
    /// disable with no enable sent between that disable and the answer: the engine had to refuse it.
    fn had_to_refuse(&self, id: &str, sent: Instant, answered: Instant) -> bool {
        let toggles = self.toggles.get(id).map(Vec::as_slice).unwrap_or_default();
        toggles.iter().any(|t| match *t {
            Toggle::DisableAcked(at) if at < sent => !toggles.iter().any(|later| match *later {
                Toggle::EnableSent(e) => e > at && e < answered,
                Toggle::DisableAcked(_) => false,
            }),
            _ => false,
        })
    }
}

fn enrollment(key: &str, version: u64, disabled: bool) -> Value {
    json!({
        "attestation": { "type": "symmetricKey", "symmetricKey": { "primaryKey": key, "secondaryKey": key } },
        "provisioningStatus": if disabled { "disabled" } else { "enabled" },
        "initialTwin": { "tags": { "version": version } },
    })
}

/// Writes `body` to enrollment `id` until the engine acknowledges it (an idempotent upsert, so a retry of a
/// write that was applied but whose answer was lost is harmless), then records it.
async fn write_until_acked(c: &reqwest::Client, info: &EngineInfo, ledger: &Mutex<Ledger>, id: &str, body: Value) {
    let disabling = body["provisioningStatus"] == "disabled";
    loop {
        if !disabling {
            let mut ledger = ledger.lock().expect("ledger");
            ledger.toggles.entry(id.to_string()).or_default().push(Toggle::EnableSent(Instant::now()));
        }
        let r = c
            .put(format!("{}/enrollments/{id}?{SVC}", info.provisioning_service.endpoint))
            .header("authorization", common::service_token(info))
            .header("if-match", "*")
            .json(&body)
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            let mut ledger = ledger.lock().expect("ledger");
            if disabling {
                ledger.toggles.entry(id.to_string()).or_default().push(Toggle::DisableAcked(Instant::now()));
            }
            ledger.acked.insert(id.to_string(), body);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One registration: `Some(admitted)` when the outcome came back, `None` when the engine died in between.
async fn register(c: &reqwest::Client, info: &EngineInfo, id: &str, key: &str) -> Option<bool> {
    let base = format!("{}/{}/registrations/{id}", info.device_endpoint, info.id_scope);
    let token = common::device_token(info, id, key);
    let r = c
        .put(format!("{base}/register?{DEV}"))
        .header("authorization", &token)
        .json(&json!({ "registrationId": id }))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return Some(false);
    }
    let op: Value = r.json().await.ok()?;
    let op_id = op["operationId"].as_str()?.to_string();
    for _ in 0..20 {
        let r = c.get(format!("{base}/operations/{op_id}?{DEV}")).header("authorization", &token).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        match v["status"].as_str() {
            Some("assigning") => tokio::time::sleep(Duration::from_millis(50)).await,
            Some(status) => return Some(status == "assigned"),
            None => return None,
        }
    }
    None
}

fn settings() -> (Duration, u64) {
    let long = std::env::var("DPS_LONG").is_ok_and(|v| v == "1");
    let seconds =
        std::env::var("DPS_LOAD_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(if long { 180 } else { 20 });
    let seed = std::env::var("DPS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1)
    });
    (Duration::from_secs(seconds), seed)
}

#[tokio::test]
async fn kill_9_under_load_and_faults_loses_no_acknowledged_write_and_admits_no_disabled_device() {
    let (run_for, seed) = settings();
    figures::report(format!(
        "engine load: seed {seed} (DPS_SEED={seed} replays the kill times and faults), {run_for:?}"
    ));
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = common::temp_dir("load-crash");
    let pid = std::process::id();
    let ip = format!("127.{}.{}.{}", 96 + pid % 32, pid / 32 % 250, 100 + pid % 50);
    let (mut child, info) = spawn(&dir, &format!("{ip}:0"), seed);
    let listen = format!("{ip}:{}", info.provisioning_service.endpoint.rsplit(':').next().expect("port"));
    let c = common::client(&info, None);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let keys: Vec<String> = (0..DEVICES).map(|_| dps_operator::engine::util::generate_key()).collect();
    for (i, key) in keys.iter().enumerate() {
        write_until_acked(&c, &info, &ledger, &format!("dev-{i}"), enrollment(key, 0, false)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked_writes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (c, info, ledger, stop, acked) =
            (c.clone(), info.clone(), ledger.clone(), stop.clone(), acked_writes.clone());
        let keys = keys.clone();
        let mut rng = fastrand::Rng::with_seed(seed ^ (w as u64 + 1));
        tasks.push(tokio::spawn(async move {
            // Each writer owns the devices i with i % WRITERS == w, so writes to one entry never race.
            let owned: Vec<usize> = (0..DEVICES).filter(|i| i % WRITERS == w).collect();
            let mut disabled = [false; DEVICES];
            let mut version = 1;
            while !stop.load(Ordering::SeqCst) {
                let (id, body) = match rng.u8(0..10) {
                    // Create a new enrollment.
                    0..=3 => {
                        let body = json!({ "attestation": { "type": "symmetricKey" }, "initialTwin": { "tags": { "version": version } } });
                        (format!("extra-{w}-{version}"), body)
                    }
                    // Update a device's enrollment, keeping its status.
                    4..=7 => {
                        let i = owned[rng.usize(0..owned.len())];
                        (format!("dev-{i}"), enrollment(&keys[i], version, disabled[i]))
                    }
                    // Disable a device's enrollment, or enable a disabled one again.
                    _ => {
                        let i = owned[rng.usize(0..owned.len())];
                        disabled[i] = !disabled[i];
                        (format!("dev-{i}"), enrollment(&keys[i], version, disabled[i]))
                    }
                };
                write_until_acked(&c, &info, &ledger, &id, body).await;
                acked.fetch_add(1, Ordering::SeqCst);
                version += 1;
            }
        }));
    }
    for (i, key) in keys.iter().enumerate() {
        let (c, info, ledger, stop, key) = (c.clone(), info.clone(), ledger.clone(), stop.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("dev-{i}");
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                match register(&c, &info, &id, &key).await {
                    Some(admitted) => {
                        let answered = Instant::now();
                        ledger.lock().expect("ledger").registrations.push((id.clone(), sent, answered, admitted))
                    }
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }

    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(rng.u64(1500..3500))).await;
        child.kill().expect("kill -9");
        let _ = child.wait();
        kills += 1;
        (child, _) = spawn(&dir, &listen, seed.wrapping_add(kills));
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    // Every write the test still waited for is acknowledged now; one more kill, then check them all.
    child.kill().expect("kill -9");
    let _ = child.wait();
    kills += 1;
    let (mut child, info) = spawn(&dir, &listen, seed);
    // A fresh client: the old one's pooled connections died with the engine.
    let c = common::client(&info, None);
    c.delete(format!("{}/engine/faults", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(&info))
        .send()
        .await
        .expect("faults off for the check");
    // Every task has ended: the ledger is ours alone.
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    let mut lost = Vec::new();
    for (id, body) in &ledger.acked {
        let stored: Option<Value> = match c
            .get(format!("{}/enrollments/{id}?{SVC}", info.provisioning_service.endpoint))
            .header("authorization", common::service_token(&info))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        let same = stored.as_ref().is_some_and(|s| {
            s["initialTwin"]["tags"]["version"] == body["initialTwin"]["tags"]["version"]
                && s["provisioningStatus"].as_str().unwrap_or("enabled")
                    == body["provisioningStatus"].as_str().unwrap_or("enabled")
        });
        if !same {
            lost.push(id.clone());
        }
    }
    let admitted_while_disabled: Vec<_> = ledger
        .registrations
        .iter()
        .filter(|(id, sent, answered, admitted)| *admitted && ledger.had_to_refuse(id, *sent, *answered))
        .collect();
    let admitted = ledger.registrations.iter().filter(|r| r.3).count();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    figures::report(format!(
        "engine load: {} registrations answered ({admitted} admitted), {kills} kills, {} acknowledged writes \
         ({} entries), lost writes = {}, admitted-while-disabled = {}, {} disables acknowledged",
        ledger.registrations.len(),
        acked_writes.load(Ordering::SeqCst),
        ledger.acked.len(),
        lost.len(),
        admitted_while_disabled.len(),
        ledger.toggles.values().flatten().filter(|t| matches!(t, Toggle::DisableAcked(_))).count(),
    ));
    assert!(kills >= 2 && admitted > 0, "the run must kill the engine and admit devices to prove anything");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(admitted_while_disabled.is_empty(), "admitted after an acknowledged disable: {admitted_while_disabled:?}");
}
